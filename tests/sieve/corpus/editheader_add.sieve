require ["editheader", "fileinto", "index"];
addheader "X-Filtered" "yes";
addheader :last "X-Trail" "end";
if header :is "X-Filtered" "yes" { fileinto "Added"; }
if header :index 1 :last "X-Trail" "end" { fileinto "Last"; }
