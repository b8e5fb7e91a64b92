require ["include"];
include "loop_a";
