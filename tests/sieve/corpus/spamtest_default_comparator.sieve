require ["spamtest","fileinto","relational"];
if spamtest :value "lt" "10" { fileinto "lt10"; }
if spamtest :value "gt" "10" { fileinto "gt10"; }
