require ["enotify","fileinto"];
if valid_notify_method "mailto:x@example.net" { notify "mailto:bob@example.net?subject=New%20mail"; }
if valid_notify_method ["mailto:x@example.net", "xmpp:x@example.net"] { fileinto "never"; }
if notify_method_capability "mailto:x@example.net" "online" "maybe" { notify :importance "3" "mailto:carol@example.net%2Cdave@example.net"; }
if notify_method_capability "mailto:x@example.net" "online" "yes" { fileinto "never2"; }
