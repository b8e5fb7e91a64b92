require ["fileinto", "include"];
if not header :contains "subject" "[list]" { return; }
fileinto "Lists";
