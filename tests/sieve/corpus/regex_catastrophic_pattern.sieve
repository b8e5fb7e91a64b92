require ["fileinto","regex"];
if header :regex "x-long" "^(a+)+$" { fileinto "a"; }
if header :regex "x-long" "^(a|aa)+c" { fileinto "c"; }
