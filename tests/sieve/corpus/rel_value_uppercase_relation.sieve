require ["fileinto","relational","comparator-i;ascii-numeric"];
if header :value "GE" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; }
