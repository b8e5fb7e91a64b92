require ["include","imap4flags"];
include "flagger";
