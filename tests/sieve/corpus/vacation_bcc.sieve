require "vacation";
vacation :from "alice@example.test" :handle "h1" "away";
