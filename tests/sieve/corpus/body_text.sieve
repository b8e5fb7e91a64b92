require ["body", "fileinto"];
if body :text :contains "Grüße aus Köln" { fileinto "Decoded"; }
if body :contains "invoice" { fileinto "Default"; }
