require ["include","fileinto","variables"];
global "n";
include "counter";
include "counter";
include :once "counter";
fileinto "count-${n}";
