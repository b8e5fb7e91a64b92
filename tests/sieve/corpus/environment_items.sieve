require ["environment","fileinto","relational","variables"];
if environment :is "location" "nowhere" { fileinto "wrong-location"; }
if environment :matches "phase" "*" { fileinto "has-phase"; }
if environment :contains "nosuchitem" "" { fileinto "unknown"; }
if environment :count "eq" "nosuchitem" "0" { fileinto "unknown-count"; }
