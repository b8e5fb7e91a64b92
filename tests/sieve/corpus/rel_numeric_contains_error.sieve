require ["fileinto","comparator-i;ascii-numeric"];
if header :contains :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; }
