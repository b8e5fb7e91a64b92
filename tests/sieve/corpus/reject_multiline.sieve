require "reject";
reject text:
Please do not write to this address.
.
;
