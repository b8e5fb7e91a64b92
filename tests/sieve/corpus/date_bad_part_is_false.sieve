require ["date","fileinto"];
if currentdate "century" "21" { stop; }
if not date "date" "century" "21" { fileinto "not-century"; }
