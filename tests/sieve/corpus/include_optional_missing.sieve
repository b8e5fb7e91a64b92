require ["include","fileinto"];
include :optional "does_not_exist";
include :optional :global "nor_this";
fileinto "fine";
