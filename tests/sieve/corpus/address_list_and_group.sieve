require "fileinto";
if address :is :domain "cc" "example.com" { fileinto "Cc"; }
if address :matches "to" "*ann*" { fileinto "Group"; }
