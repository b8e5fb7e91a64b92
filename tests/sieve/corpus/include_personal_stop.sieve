require ["include","fileinto"];
include "spam";
fileinto "after";
