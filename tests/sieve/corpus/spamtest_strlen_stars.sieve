require ["spamtest","fileinto","variables"];
if spamtest :matches "*" { fileinto "level.${1}"; }
