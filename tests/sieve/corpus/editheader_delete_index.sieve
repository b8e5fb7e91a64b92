require ["editheader", "fileinto", "index"];
deleteheader :index 1 "X-Tag";
deleteheader :index 1 :last "X-Tag";
if header :index 1 "X-Tag" "second" { fileinto "Middle"; }
if header :index 2 "X-Tag" "" { fileinto "Never"; }
