require ["fileinto","regex"];
if header :regex "subject" "\\<watches\\>" { fileinto "word"; }
if header :regex "subject" "\\<watch\\>" { fileinto "partial"; }
if header :regex "subject" "\\bCheap\\b" { fileinto "perl-b"; }
if header :regex "subject" "[[:space:]]50%" { fileinto "space-class"; }
