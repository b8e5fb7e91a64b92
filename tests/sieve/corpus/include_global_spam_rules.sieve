require ["include","fileinto"];
include :global "spamrules";
fileinto "Inbox-Rules";
