require "fileinto";
if true {
    if header :contains "subject" "meeting" {
        if not header :contains "subject" "cancelled" {
            fileinto "Deep";
        }
    }
}
