require ["fileinto","regex"];
if header :regex "subject" "cheap WATCHES" { fileinto "casemap"; }
if header :regex :comparator "i;octet" "subject" "cheap WATCHES" { fileinto "octet"; }
if header :regex :comparator "i;octet" "subject" "[Cc]heap watches" { fileinto "octet-class"; }
