require ["enotify"];
notify "mailto:";
