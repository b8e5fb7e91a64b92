require ["fileinto"];
include "spam";
