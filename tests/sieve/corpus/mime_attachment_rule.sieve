require ["mime","fileinto"];
# Reject-style attachment filter, as admins write it
if header :mime :anychild :param "filename" :matches "content-disposition" ["*.pdf", "*.exe"] { fileinto "Attachments"; }
if header :mime :anychild :contenttype "content-type" "application/zip" { fileinto "zip"; }
