require ["include","fileinto"];
# rule:[global spam]
include :global "spamrules";
# rule:[lists]
if header :contains "subject" "[list]"
{
	fileinto "Lists";
}
