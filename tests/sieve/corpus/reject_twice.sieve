require "reject";
reject "no";
reject "never";
