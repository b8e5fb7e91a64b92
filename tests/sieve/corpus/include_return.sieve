require ["include","fileinto"];
include "lists";
fileinto "main";
