require ["fileinto"];
if header :contains "subject" "${hex:35 30}%" { fileinto "decoded"; }
if header :contains "x-literal" "${hex:35 30}" { fileinto "literal"; }
