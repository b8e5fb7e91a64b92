require ["fileinto","regex","variables"];
set "score" "7.3";
if string :regex "${score}" "^([0-9]+)\\." { fileinto "int-${1}"; }
