require ["fileinto", "subaddress"];
if address :detail "to" "lists" { fileinto "Detail"; }
if address :user "to" "alice" { fileinto "User"; }
if address :detail "from" "" { fileinto "Never"; }
