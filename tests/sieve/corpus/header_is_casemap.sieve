require "fileinto";
if header :is "Subject" "meeting on monday" { fileinto "Hit"; }
