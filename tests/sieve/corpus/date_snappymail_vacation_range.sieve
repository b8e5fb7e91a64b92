require ["vacation","date","relational"];

if allof(
	currentdate :value "ge" "date" "2024-01-01",
	currentdate :value "le" "date" "2098-02-03"
) {
	vacation :days 3 :addresses ["alice@example.test"] :subject "Vacation" "Back soon";
}
