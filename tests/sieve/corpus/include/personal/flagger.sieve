require ["imap4flags"];
addflag "\\Flagged";
