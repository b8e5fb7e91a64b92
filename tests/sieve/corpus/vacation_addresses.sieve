require "vacation";
vacation :addresses ["alias@example.test"] "I am away.";
