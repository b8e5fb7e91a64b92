require ["fileinto","relational"];
if address :value "lt" :domain "from" "example.z" { fileinto "domain-lt"; }
if address :localpart :value "ge" "to" "carol" { fileinto "local-ge"; }
