require "fileinto";
if address :all :is "from" "BOB@EXAMPLE.ORG" { fileinto "CaseInsensitive"; }
if address :comparator "i;octet" :all :is "from" "BOB@EXAMPLE.ORG" { fileinto "Never"; }
if address :localpart :matches ["to", "cc"] "ali?e" { fileinto "Question"; }
