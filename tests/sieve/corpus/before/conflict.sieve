require ["reject", "fileinto"];
fileinto "Before";
reject "no";
