require "fileinto";
if header :contains "subject" "" { fileinto "Present"; }
if header :contains "x-missing" "" { fileinto "Never"; }
if header :matches "x-empty" "*" { fileinto "EmptyMatches"; }
if header :is "x-empty" "" { fileinto "EmptyIs"; }
