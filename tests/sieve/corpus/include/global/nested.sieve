require ["include", "fileinto"];
include :global "spamrules";
fileinto "after-nested";
