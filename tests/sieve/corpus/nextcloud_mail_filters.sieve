### Nextcloud Mail: Filters ### DON'T EDIT ###
require ["date", "fileinto", "relational"];
# FILTER: [{"name":"Newsletters","enable":true,"operator":"anyof","tests":[{"operator":"contains","values":["newsletter"],"field":"subject"}]}]
### Nextcloud Mail: Filters ### DON'T EDIT ###
if anyof (header :contains "List-Id" ["newsletter"], header :contains "Subject" ["newsletter"]) {
fileinto "Newsletters";
}
