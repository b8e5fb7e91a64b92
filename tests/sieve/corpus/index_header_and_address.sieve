require ["index","fileinto","variables"];
if header :index 2 :matches "received" "from *.example.org by *" { fileinto "second.${1}"; }
if header :index 1 :last :contains "received" "c.example.org" { fileinto "oldest"; }
if address :index 2 :domain "cc" "example.net" { fileinto "wrong"; }
if address :index 1 :all "to" "carol@example.test" { fileinto "to-carol"; }
if header :index 5 :contains "received" "" { fileinto "none"; }
