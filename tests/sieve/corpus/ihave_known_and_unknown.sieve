require ["ihave","fileinto"];
if ihave "variables" { set "x" "1"; fileinto "v${x}"; }
if ihave ["relational", "date"] { if currentdate :value "ge" "year" "2000" { fileinto "dynamic"; } }
if ihave ["fileinto", "x-frobnicate"] { frobnicate "now"; fileinto "never"; } else { fileinto "no-frob"; }
if not ihave "x-other" { fileinto "not-other"; }
