require ["duplicate","fileinto","variables"];
if header :matches "subject" "*" { set "s" "${1}"; }
if duplicate :uniqueid "${s}" :handle "subjects" :seconds 3600 { fileinto "dup-subject"; }
if duplicate :header "x-spam-score" :last { fileinto "dup-score"; }
if not duplicate :header "x-nothere" { fileinto "no-header-no-dup"; }
