require ["reject", "copy"];
reject "no";
redirect :copy "carol@example.net";
