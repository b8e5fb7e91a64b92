require ["fileinto","relational","comparator-i;ascii-numeric"];
# rule:[spam score]
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5"
{
	fileinto "Junk";
	stop;
}
