require ["editheader", "fileinto", "regex", "relational", "comparator-i;ascii-numeric"];
deleteheader :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5";
deleteheader :regex "Subject" "^\\[spam\\]";
deleteheader :contains "X-Tag" "ir";
if header :is "X-Spam-Score" "2" { fileinto "Low"; }
if not exists "Subject" { fileinto "NoSubject"; }
if header :is "X-Tag" "second" { fileinto "Kept"; }
