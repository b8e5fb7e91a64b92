require ["date","fileinto","relational"];
if date "x-bad-date" "year" "2026" { fileinto "bad"; }
if date "x-nothere" "year" "2026" { fileinto "missing"; }
if date :count "eq" "x-nothere" "year" "0" { fileinto "count0"; }
if not date :value "ge" "x-bad-date" "year" "0000" { fileinto "notbad"; }
