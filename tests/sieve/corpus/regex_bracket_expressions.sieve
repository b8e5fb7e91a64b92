require ["fileinto","regex"];
if header :regex "subject" "[]x[]list" { fileinto "bracket-first"; }
if header :regex "x-path" "a[\\]b" { fileinto "backslash-in-set"; }
if header :regex "subject" "[^]]+%" { fileinto "negated"; }
if header :regex "subject" "[[:upper:]][[:lower:]]+ [[:alpha:]]+" { fileinto "posix-classes"; }
