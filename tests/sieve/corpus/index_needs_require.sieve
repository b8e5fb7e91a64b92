require ["fileinto"];
if header :index 1 "received" "x" { fileinto "x"; }
