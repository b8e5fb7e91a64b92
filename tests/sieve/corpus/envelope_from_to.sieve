require ["fileinto", "envelope"];
if envelope :domain "from" "example.org" { fileinto "FromDomain"; }
if envelope :is "to" "alice@example.test" { fileinto "To"; }
if envelope :localpart :is "from" "nobody" { fileinto "Never"; }
