require ["fileinto", "imap4flags", "relational", "comparator-i;ascii-numeric"];

# rule:[Spam]
if header :contains "X-Spam-Flag" "YES"
{
  setflag "\\Seen";
  fileinto "Junk";
  stop;
}

# rule:[Score]
if header :value "gt" :comparator "i;ascii-numeric" "X-Spam-Score" "3"
{
  fileinto "Maybe";
}
