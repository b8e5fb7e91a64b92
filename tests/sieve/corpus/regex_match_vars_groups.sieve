require ["fileinto","regex","variables"];
if header :regex "date" "([0-9]+) ([A-Z][a-z]{2}) ([0-9]{4})" {
  set "d" "${3}-${2}-${1}";
  fileinto "${d}";
}
if header :regex "subject" "(nomatch)?Cheap" { fileinto "empty-${1}-group"; }
if header :regex "subject" "wat(ch)(es)" { fileinto "${0}:${2}"; }
