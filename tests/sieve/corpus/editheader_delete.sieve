require ["editheader", "fileinto"];
deleteheader "X-Spam-Score";
if not exists "X-Spam-Score" { fileinto "Gone"; }
deleteheader "X-Absent";
