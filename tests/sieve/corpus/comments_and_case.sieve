# hash comment
/* bracketed
   comment */
REQUIRE "fileinto"; # trailing
IF Header :Contains "SUBJECT" "meeting" { FileInto "Upper"; }
