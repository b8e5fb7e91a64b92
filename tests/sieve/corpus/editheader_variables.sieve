require ["editheader", "fileinto", "variables"];
if header :matches "Subject" "[SPAM] *" {
  deleteheader "Subject";
  addheader "Subject" "${1}";
}
set "name" "X-Note";
addheader "${name}" "café ok";
if header :is "Subject" "cheap watches" { fileinto "Cleaned"; }
if header :contains "X-Note" "ok" { fileinto "Noted"; }
