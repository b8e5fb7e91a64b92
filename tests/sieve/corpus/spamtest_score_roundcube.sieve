require ["spamtest","fileinto","relational","comparator-i;ascii-numeric"];
# rule:[spamtest]
if spamtest :value "ge" :comparator "i;ascii-numeric" "6"
{
	fileinto "Junk";
}
if spamtest :value "eq" :comparator "i;ascii-numeric" "7" { fileinto "seven"; }
