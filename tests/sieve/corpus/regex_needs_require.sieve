require ["fileinto"];
if header :regex "subject" "Cheap" { fileinto "x"; }
