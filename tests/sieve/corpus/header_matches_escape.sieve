require "fileinto";
if header :matches "subject" "\\*SPAM\\* *" { fileinto "Spam"; }
if header :matches "subject" "\\*SPAM\\?*" { fileinto "Never"; }
