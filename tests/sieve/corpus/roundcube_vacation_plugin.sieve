require ["vacation","date","relational"];
# rule:[vacation]
if allof (currentdate :value "ge" "date" "2024-07-01", currentdate :value "le" "date" "2099-07-14")
{
	vacation :days 1 :subject "Out of office" :addresses ["alice@example.test","alias@example.test"] :from "Alice <alice@example.test>" "I'm on vacation until July 14.";
}
