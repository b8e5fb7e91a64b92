require ["fileinto","relational"];
# default comparator i;ascii-casemap: "10" sorts before "2"
if header :value "lt" "X-Priority" "2" { fileinto "casemap-lt"; }
if header :value "gt" "subject" "re:" { fileinto "subject-gt"; }
if header :value "eq" :comparator "i;octet" "x-spam-flag" "yes" { fileinto "octet-eq"; }
if header :value "eq" "x-spam-flag" "no" { fileinto "casemap-eq"; }
