require ["fileinto","relational","comparator-i;ascii-numeric"];
if address :count "ge" :comparator "i;ascii-numeric" ["to","cc"] "4" { fileinto "many"; }
if address :count "eq" :comparator "i;ascii-numeric" "to" "2" { fileinto "two-to"; }
if header :count "eq" :comparator "i;ascii-numeric" "received" "3" { fileinto "three-hops"; }
if header :count "eq" :comparator "i;ascii-numeric" "x-missing" "0" { fileinto "none"; }
if header :count "gt" :comparator "i;ascii-numeric" "x-missing" "0" { fileinto "wrong"; }
