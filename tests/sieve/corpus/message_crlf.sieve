require "fileinto";
if header :is "subject" "Meeting on Monday" { fileinto "Crlf"; }
if size :over 150 { fileinto "SizeCounted"; }
