require ["fileinto","regex","variables"];
if address :regex :domain "cc" "^(.*)\\.net$" { fileinto "net-${1}"; }
if address :regex :localpart "to" "^c.*l$" { fileinto "carol"; }
