require ["fileinto","relational","envelope"];
if envelope :count "eq" "from" "1" { fileinto "one-sender"; }
if header :count "lt" "received" "10" { fileinto "casemap-lt"; }
