require ["imap4flags", "fileinto"];
addflag "Work Important";
if hasflag :is "important" { fileinto "HasImportant"; }
if hasflag :contains "mport" { fileinto "HasContains"; }
if hasflag "\\Seen" { fileinto "Never"; }
