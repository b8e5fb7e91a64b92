require ["fileinto"];
if header :value "ge" "X-Spam-Score" "5" { fileinto "Junk"; }
