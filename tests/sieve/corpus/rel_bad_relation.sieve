require ["fileinto","relational"];
if header :value "greater" "X-Spam-Score" "5" { fileinto "Junk"; }
