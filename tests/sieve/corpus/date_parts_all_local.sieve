require ["date","fileinto","variables"];
if date :matches "date" "iso8601" "*" { fileinto "iso.${0}"; }
if date :matches "date" "std11" "*" { fileinto "std.${0}"; }
if date :matches "date" "julian" "*" { fileinto "julian.${0}"; }
if date :matches "date" "weekday" "*" { fileinto "weekday.${0}"; }
if date :matches "date" "minute" "*" { fileinto "minute.${0}"; }
if date :matches "date" "second" "*" { fileinto "second.${0}"; }
if date :matches "date" "zone" "*" { fileinto "zone.${0}"; }
