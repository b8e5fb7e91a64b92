require "fileinto";
if header :contains "subject" "caf" { fileinto "Latin"; }
