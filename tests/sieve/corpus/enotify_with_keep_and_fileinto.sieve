require ["enotify","fileinto"];
fileinto "Junk";
notify :from "alice@example.test" "mailto:alice@example.net?cc=eve@example.net";
