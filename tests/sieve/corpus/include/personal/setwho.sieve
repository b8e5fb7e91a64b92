require ["include", "fileinto", "variables"];
global "who";
fileinto "saw-${who}";
set "who" "included";
set "local" "invisible";
