require ["date","relational","fileinto","variables"];
if date :originalzone "date" "year" "2026" { fileinto "y"; }
if date :originalzone "date" "month" "03" { fileinto "m"; }
if date :originalzone "date" "day" "10" { fileinto "d"; }
if date :originalzone "date" "hour" "14" { fileinto "h"; }
if date :matches :originalzone "date" "date" "*" { set "x" "${0}"; }
if date :matches :originalzone "date" "time" "*" { fileinto "t-${0}-${x}"; }
if date :matches :originalzone "date" "zone" "*" { fileinto "zone${0}"; }
