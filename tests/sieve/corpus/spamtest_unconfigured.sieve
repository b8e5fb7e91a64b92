require ["spamtest","fileinto"];
if spamtest "0" { fileinto "untested"; }
