require ["virustest","fileinto","relational","comparator-i;ascii-numeric","variables"];
if virustest :value "ge" :comparator "i;ascii-numeric" "4" { fileinto "Quarantine"; }
if virustest :matches "*" { fileinto "virus.${1}"; }
