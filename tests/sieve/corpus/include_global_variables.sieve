require ["include","fileinto","variables"];
global "who";
set "who" "main";
set "local" "main-local";
include "setwho";
fileinto "main-${who}-${local}";
