require "fileinto";
fileinto "Before";
