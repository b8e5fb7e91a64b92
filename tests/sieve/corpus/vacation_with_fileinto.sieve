require ["vacation", "fileinto"];
fileinto "Later";
vacation :mime text:
Content-Type: text/plain

Away.
.
;
