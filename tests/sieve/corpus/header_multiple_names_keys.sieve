require "fileinto";
if header :contains ["x-spam", "subject"] ["lottery", "monday"] { fileinto "Any"; }
