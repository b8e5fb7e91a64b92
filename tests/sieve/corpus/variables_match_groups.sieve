require ["variables", "fileinto"];
if header :matches "from" "* <*@*>" {
    fileinto "${2}.${3}";
}
if header :matches "subject" "*o*" {
    set "first" "${1}";
    set "all" "${0}";
}
fileinto "${first}|${all}";
