require ["date","relational","vacation"];
# rule:[Out of office]
if allof (currentdate :value "ge" "date" "2019-01-01", currentdate :value "le" "date" "2019-01-10")
{
	vacation :days 1 :subject "Out of office" "I am away.";
}
