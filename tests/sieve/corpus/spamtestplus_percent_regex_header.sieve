require ["spamtestplus","fileinto","relational","comparator-i;ascii-numeric","variables"];
if spamtest :percent :matches "*" { fileinto "pct.${1}"; }
if spamtest :matches "*" { fileinto "score.${1}"; }
