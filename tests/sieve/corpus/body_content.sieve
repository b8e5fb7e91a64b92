require ["body", "fileinto"];
if body :content "text/html" :contains "secret" { fileinto "Html"; }
if body :content "text/html" :contains "invoice" { fileinto "Never"; }
if body :content "application" :contains "binary data" { fileinto "Binary"; }
