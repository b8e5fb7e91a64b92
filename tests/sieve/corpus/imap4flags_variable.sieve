require ["imap4flags", "variables", "fileinto"];
setflag "myflags" "\\Seen";
addflag "myflags" "Work";
if hasflag "myflags" "work" { fileinto :flags "${myflags}" "FromVar"; }
