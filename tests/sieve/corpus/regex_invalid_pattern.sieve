require ["fileinto","regex"];
if header :regex "subject" "Cheap(" { fileinto "x"; }
