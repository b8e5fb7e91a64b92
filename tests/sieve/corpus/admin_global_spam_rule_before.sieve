require ["fileinto","relational","comparator-i;ascii-numeric","imap4flags"];
if anyof (header :is "X-Spam-Flag" "YES", header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "6") {
  addflag "$Junk";
  fileinto "Junk";
  stop;
}
