require "fileinto";
if header :contains "subject" "Grüße" { fileinto "Decoded"; }
if header :contains "subject" "=?utf-8?" { fileinto "Raw"; }
