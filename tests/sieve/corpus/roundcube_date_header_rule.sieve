require ["date","relational","fileinto"];
# rule:[old mail]
if date :value "lt" :originalzone "date" "date" "2026-04-01"
{
	fileinto "Archive.2026";
}
