require ["spamtest","fileinto","relational","comparator-i;ascii-numeric"];
if spamtest :value "eq" :comparator "i;ascii-numeric" "1" { fileinto "one"; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }
