require ["fileinto","regex","variables"];
if header :regex "subject" "(Che|Cheap) (w|wa)" { fileinto "${1}_${2}"; }
