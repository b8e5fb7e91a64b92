require ["variables", "fileinto"];
set "who" "Alice";
if string :is "${who}" "alice" { fileinto "StringIs"; }
if string :matches ["x", "${who}"] "A*e" { fileinto "StringMatches"; }
if string :is "${unset}" "" { fileinto "Empty"; }
