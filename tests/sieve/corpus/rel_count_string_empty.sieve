require ["fileinto","relational","variables","comparator-i;ascii-numeric"];
set "a" "x";
set "b" "";
if string :count "eq" :comparator "i;ascii-numeric" ["${a}", "${b}", "y"] "2" { fileinto "two"; }
if string :value "gt" :comparator "i;ascii-numeric" "${a}" "5" { fileinto "x-is-infinite"; }
