require ["include"];
include "broken";
