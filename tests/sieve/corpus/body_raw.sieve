require ["body", "fileinto"];
if body :raw :contains "Gr=FC=DFe" { fileinto "Raw"; }
if body :raw :contains "Grüße" { fileinto "Never"; }
