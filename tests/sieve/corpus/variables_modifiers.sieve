require ["variables", "fileinto"];
set "a" "Hello World";
set :upper "up" "${a}";
set :lower :upperfirst "lf" "hELLO";
set :length "len" "${a}";
set :lowerfirst "lwf" "ABC";
fileinto "${up}-${lf}-${len}-${lwf}";
