if header :contains "subject" "meeting" {
    stop;
}
discard;
