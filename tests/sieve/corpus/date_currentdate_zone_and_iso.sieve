require ["date","relational","fileinto","variables","comparator-i;ascii-numeric"];
if currentdate :matches :zone "+0530" "zone" "*" { fileinto "zone.${0}"; }
if currentdate :matches :zone "-0000" "zone" "*" { fileinto "negzero.${0}"; }
if currentdate :value "gt" "iso8601" "2020-01-01T00:00:00Z" { fileinto "after2020"; }
if currentdate :value "ge" :comparator "i;ascii-numeric" "year" "2024" { fileinto "numeric"; }
if currentdate :zone "+2360" :value "ge" "year" "2020" { fileinto "badzone"; }
if currentdate "century" "21" { fileinto "badpart"; }
if currentdate :value "lt" "julian" "99999" { fileinto "julian-casemap"; }
