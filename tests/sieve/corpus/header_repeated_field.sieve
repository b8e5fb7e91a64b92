require ["fileinto", "variables"];
if header :is "received" "by mx2" { fileinto "Second"; }
if header :matches "received" "by *" { fileinto "first-${1}"; }
