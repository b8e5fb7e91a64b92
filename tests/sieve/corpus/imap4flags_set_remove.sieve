require ["imap4flags", "fileinto"];
setflag ["\\Seen", "\\Answered"];
removeflag "\\Answered";
addflag "\\Flagged";
fileinto "Flagged";
removeflag "\\Seen";
