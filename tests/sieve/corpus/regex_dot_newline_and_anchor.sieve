require ["fileinto","regex","variables"];
set "t" "line1
line2";
if string :regex "${t}" "1.line" { fileinto "dot-nl"; }
if string :regex "${t}" "1..line" { fileinto "dot-crlf"; }
if string :regex "${t}" "1[^x]+line" { fileinto "class-nl"; }
if string :regex "${t}" "^line2" { fileinto "anchor-at-line"; }
