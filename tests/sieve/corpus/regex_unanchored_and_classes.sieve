require ["fileinto","regex"];
if header :regex "x-spam-score" "[[:digit:]]+\\.[[:digit:]]" { fileinto "decimal"; }
if header :regex "subject" "[0-9]{2}%" { fileinto "percent"; }
if header :regex "subject" "^watches" { fileinto "wrong-anchor"; }
