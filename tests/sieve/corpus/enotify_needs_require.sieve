notify "mailto:alice@example.net";
