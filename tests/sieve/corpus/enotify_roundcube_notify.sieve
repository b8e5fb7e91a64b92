require ["enotify","variables"];
# rule:[notify boss]
if address :is "from" "bob@example.org"
{
	notify :importance "1" :message "Mail from the boss" "mailto:alice@example.net";
}
