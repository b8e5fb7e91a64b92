require ["mime","fileinto"];
if address :mime :is :domain "from" "example.org" { fileinto "mime-address"; }
if exists :mime "content-type" { fileinto "exists"; }
if exists :mime ["content-type", "content-disposition"] { fileinto "both-top"; }
