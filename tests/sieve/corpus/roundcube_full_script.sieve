require ["fileinto","copy","imap4flags","envelope","body","relational","comparator-i;ascii-numeric","regex","date","index"];
# rule:[Move newsletters]
if anyof (header :contains "list-id" "newsletter", address :domain :is "from" "news.example.com")
{
	fileinto "Newsletters";
	stop;
}
# rule:[spam]
if allof (header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5", not header :contains "from" "boss@example.test")
{
	fileinto "Junk";
	stop;
}
# rule:[flag priority]
if header :value "le" :comparator "i;ascii-numeric" "x-priority" "2"
{
	addflag "\\Flagged";
}
# rule:[copy big]
if size :over 100K
{
	fileinto :copy "Big";
}
