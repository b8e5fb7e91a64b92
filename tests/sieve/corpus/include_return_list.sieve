require ["include","fileinto"];
include "lists";
