require ["date","relational","fileinto"];
if allof (date :value "ge" :originalzone "date" "hour" "09", date :value "lt" :originalzone "date" "hour" "17") { fileinto "office"; }
if date :value "lt" "date" "date" "2026-04-01" { fileinto "q1"; }
