require "fileinto";
if header :is "subject" "nope" {
    fileinto "A";
} elsif header :contains "subject" "MONDAY" {
    fileinto "B";
} else {
    fileinto "C";
}
