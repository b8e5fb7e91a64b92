require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto", "imap4flags"];
# Site-wide rule run before every user's script (sieve_before)
if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto "Junk"; stop; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "5" { addflag "$Junk"; }
