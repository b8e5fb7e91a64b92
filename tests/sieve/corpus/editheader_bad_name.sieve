require ["editheader", "fileinto"];
addheader "X Bad" "value";
fileinto "Never";
