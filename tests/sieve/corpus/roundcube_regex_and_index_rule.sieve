require ["fileinto","regex","index"];
# rule:[mailer]
if header :index 1 :regex "received" "^from [a-c]\\.example\\.org"
{
	fileinto "Trusted";
}
