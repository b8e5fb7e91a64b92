require ["fileinto","regex"];
# rule:[regex from]
if header :regex "from" "bob@example\\.(org|com)"
{
	fileinto "Bob";
	stop;
}
