require "fileinto";
if true { fileinto "T"; }
if false { fileinto "F"; }
