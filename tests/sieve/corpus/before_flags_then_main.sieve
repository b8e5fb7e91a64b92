require "imap4flags";
addflag "Main";
