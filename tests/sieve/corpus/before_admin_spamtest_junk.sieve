require ["fileinto", "imap4flags"];
if hasflag "$Junk" { fileinto "Suspect"; stop; }
if header :contains "subject" "[list]" { fileinto "Lists"; }
