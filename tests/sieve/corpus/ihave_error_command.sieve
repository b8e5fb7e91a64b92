require ["ihave","fileinto"];
fileinto "Before";
if header :contains "subject" "watches" { error "watches are not allowed"; }
