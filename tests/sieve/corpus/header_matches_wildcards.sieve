require "fileinto";
if header :matches "subject" "M??ting*day" { fileinto "Q"; }
if header :matches "from" "*@example.org>" { fileinto "Star"; }
if header :matches "subject" "Meeting" { fileinto "Never"; }
