require ["enotify"];
notify "xmpp:alice@example.net";
