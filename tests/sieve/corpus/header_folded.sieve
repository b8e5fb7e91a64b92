require "fileinto";
if header :is "x-note" "first part second part" { fileinto "Unfolded"; }
if header :contains "x-note" "part second" { fileinto "Contains"; }
