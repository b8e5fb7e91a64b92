require ["date","index","fileinto","variables"];
if date :matches :originalzone "received" "second" "*" { fileinto "first.${0}"; }
if date :originalzone "received" "second" "58" { fileinto "any.58"; }
if date :originalzone "received" "iso8601" "2026-03-10T14:30:01+01:00" { fileinto "middle"; }
