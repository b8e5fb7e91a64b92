require ["index","fileinto"];
if address :index 2 :is "to" "second@example.test" { fileinto "second-field"; }
if address :last :index 1 :is "to" "second@example.test" { fileinto "last-field"; }
