require ["fileinto","regex","body"];
if body :regex :text "B[a-z]+ now" { fileinto "body"; }
