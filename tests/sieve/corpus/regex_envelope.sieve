require ["fileinto","regex","envelope"];
if envelope :regex :all "to" "^alice@.*\\.test$" { fileinto "env"; }
