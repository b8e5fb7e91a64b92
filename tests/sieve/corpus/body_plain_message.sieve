require ["body", "fileinto"];
if body :contains "see you" { fileinto "Plain"; }
if body :is "nothing" { fileinto "Never"; }
