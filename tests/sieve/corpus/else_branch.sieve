require "fileinto";
if false { fileinto "A"; } elsif false { fileinto "B"; } else { fileinto "C"; }
