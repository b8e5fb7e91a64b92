require ["foreverypart","mime","variables","fileinto","extracttext"];
set "n" "";
foreverypart {
  set "n" "${n}x";
  if header :mime :contenttype "content-type" "*" { }
  if header :mime :matches :contenttype "content-type" "*" { set "t" "${t},${1}"; }
  if header :mime :param "filename" :matches "content-disposition" "*" { fileinto "file-${1}"; }
  if header :mime :type "content-type" "text" { extracttext :first 5 "e"; set "x" "${x}|${e}"; }
}
fileinto "n${n}";
fileinto "t${t}";
fileinto "x${x}";
if header :mime :anychild :subtype "content-type" "html" { fileinto "has-html"; }
if header :mime :type "content-type" "multipart" { fileinto "top-multipart"; }
if header :mime :param ["charset","name"] :matches "content-type" "*" { fileinto "p-${1}"; }
if header :mime :anychild :param ["charset","name"] :matches "content-type" "*" { fileinto "pa-${1}"; }
if exists :mime :anychild "content-disposition" { fileinto "exists-any"; }
if header :mime :contenttype "x-none" "" { fileinto "none-empty"; }
if header :contains "subject" "parts" { fileinto "plain-header"; }
