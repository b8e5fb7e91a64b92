require "reject";
reject "I do not accept mail about meetings.";
