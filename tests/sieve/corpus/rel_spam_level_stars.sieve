require ["fileinto","relational","comparator-i;ascii-numeric"];
if header :contains "X-Spam-Level" "*****" { fileinto "Spam5"; stop; }
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "3" { fileinto "Maybe"; }
