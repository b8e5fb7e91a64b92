require ["spamtest","fileinto"];
if spamtest :percent "50" { fileinto "x"; }
