/*
BEGIN:FILTER:1a2b
BEGIN:HEADER
eyJJRCI6IjFhMmIiLCJFbmFibGVkIjp0cnVlfQ==
END:HEADER
*/
require ["fileinto","regex","relational","comparator-i;ascii-numeric"];
if header :regex "X-Spam-Level" "^\\*{5,}" {
	fileinto "Spam";
	stop;
}
/* END:FILTER */
