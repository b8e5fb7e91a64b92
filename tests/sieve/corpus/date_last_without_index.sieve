require ["date","index"];
if date :last "date" "year" "2026" { stop; }
