require ["fileinto"];
if header :contains "x-spam-flag" "yes" { fileinto "Junk"; stop; }
