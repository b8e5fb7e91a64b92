require ["fileinto", "comparator-i;octet"];
if header :comparator "i;octet" :is "subject" "meeting on monday" { fileinto "Wrong"; }
if header :comparator "i;octet" :contains "subject" "Monday" { fileinto "Right"; }
