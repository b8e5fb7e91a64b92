require ["imap4flags", "fileinto"];
addflag "\\Deleted";
fileinto :flags ["\\Seen", "urgent"] "Urgent";
keep :flags "\\Draft";
