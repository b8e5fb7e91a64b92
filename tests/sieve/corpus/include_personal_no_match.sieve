require ["include","fileinto"];
include :personal "spam";
fileinto "after";
