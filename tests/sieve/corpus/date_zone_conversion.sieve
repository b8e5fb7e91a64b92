require ["date","fileinto","variables"];
if date :matches :zone "-0500" "date" "iso8601" "*" { fileinto "ny.${0}"; }
if date :matches :zone "+0530" "date" "time" "*" { fileinto "in.${0}"; }
if date :matches :zone "+1300" "date" "date" "*" { fileinto "nz.${0}"; }
if date :matches :originalzone "date" "iso8601" "*" { fileinto "orig.${0}"; }
