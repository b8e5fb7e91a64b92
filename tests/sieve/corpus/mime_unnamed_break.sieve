require ["foreverypart","mime","variables","fileinto"];
set "n" "";
foreverypart { set "n" "${n}x"; if header :mime :type "content-type" "application" { break; } }
fileinto "n${n}";
