require ["date","fileinto","relational"];
if currentdate :zone "CET" :matches "zone" "*" { fileinto "cet-is-local"; }
if not date :zone "+01" "date" "year" "2026" { fileinto "not-bad-zone"; }
