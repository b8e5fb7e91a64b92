require ["fileinto","relational","comparator-i;ascii-numeric"];
if header :value "gt" :comparator "i;ascii-numeric" "X-Priority" "1" { fileinto "gt"; }
if header :value "ge" :comparator "i;ascii-numeric" "X-Priority" "2" { fileinto "ge"; }
if header :value "lt" :comparator "i;ascii-numeric" "X-Priority" "3" { fileinto "lt"; }
if header :value "le" :comparator "i;ascii-numeric" "X-Priority" "1" { fileinto "le"; }
if header :value "eq" :comparator "i;ascii-numeric" "X-Priority" "02" { fileinto "eq"; }
if header :value "ne" :comparator "i;ascii-numeric" "X-Priority" "2" { fileinto "ne"; }
