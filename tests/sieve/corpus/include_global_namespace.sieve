require ["include","fileinto","variables"];
include "setwho";
fileinto "ns-${global.who}";
