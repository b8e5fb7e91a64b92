require "fileinto";
if address :localpart "from" "bob" { fileinto "Local"; }
if address :domain "from" "EXAMPLE.org" { fileinto "Domain"; }
if address :all :is "to" "alice@example.test" { fileinto "All"; }
if address :is "from" "Bob Example" { fileinto "Never"; }
