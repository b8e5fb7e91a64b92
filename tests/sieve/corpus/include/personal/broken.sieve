require ["fileinto"];
fileinto "x"
