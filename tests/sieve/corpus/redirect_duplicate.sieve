redirect "carol@example.net";
redirect "Carol@Example.NET";
redirect "dave@example.net";
