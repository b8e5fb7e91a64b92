require ["fileinto","regex","variables"];
if header :regex "subject" "^Re: \\[([a-z]+)\\] (.*)$" { fileinto "lists.${1}"; }
