require ["variables", "fileinto"];
set :quotewildcard "pat" "*SPAM*";
if header :matches "subject" "*${pat}*" { fileinto "Literal"; }
if header :matches "subject" "*${pat}" { fileinto "NeverLiteral"; }
set "loose" "*SPAM*";
if header :matches "subject" "${loose}" { fileinto "Loose"; }
