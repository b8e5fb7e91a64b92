require "fileinto";
if allof (header :contains "subject" "meeting", address :domain "from" "example.org") { fileinto "AllOf"; }
if anyof (false, header :contains "subject" "nothing", true) { fileinto "AnyOf"; }
if not anyof (false, false) { fileinto "Not"; }
if allof (true, false) { fileinto "Never"; }
