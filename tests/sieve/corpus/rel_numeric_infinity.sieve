require ["fileinto","relational","comparator-i;ascii-numeric"];
if header :value "gt" :comparator "i;ascii-numeric" "subject" "999999999" { fileinto "inf-gt"; }
if header :value "eq" :comparator "i;ascii-numeric" "subject" "abc" { fileinto "inf-eq"; }
if header :is :comparator "i;ascii-numeric" "X-Priority" "002" { fileinto "is-numeric"; }
if header :value "lt" :comparator "i;ascii-numeric" "X-Spam-Score" "7" { fileinto "leading-digits"; }
