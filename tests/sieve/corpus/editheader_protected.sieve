require ["editheader", "fileinto"];
deleteheader "Received";
deleteheader "Auto-Submitted";
addheader "Received" "from nowhere";
if exists "Received" { fileinto "StillReceived"; }
if header :is "Auto-Submitted" "no" { fileinto "StillAuto"; }
if header :contains "Received" "nowhere" { fileinto "Never"; }
