require ["include","fileinto"];
include "no_require";
