require ["encoded-character","fileinto"];
if header :contains "subject" "${hex:35 30}%" { fileinto "${unicode:263a}-${hex:4a 75 6E 6b}"; }
if header :contains "subject" "${hex:zz}" { fileinto "malformed-stays"; }
if header :contains "subject" "${UNICODE:43}heap" { fileinto "upper-kind"; }
