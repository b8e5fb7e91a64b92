redirect "carol@example.net";
discard;
