require ["mime","foreverypart","fileinto","variables","extracttext"];
set "n" "";
foreverypart { set "n" "${n}x"; extracttext :first 3 :upper "t"; }
fileinto "n${n}-${t}";
if header :mime :contenttype "content-type" "text/plain" { fileinto "default-type"; }
