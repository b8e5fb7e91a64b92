require ["variables", "fileinto"];
set "x" "${unknown}A${ not a ref }B\${x}";
fileinto "${x}";
