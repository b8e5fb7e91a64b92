require "fileinto";
fileinto "Main";
