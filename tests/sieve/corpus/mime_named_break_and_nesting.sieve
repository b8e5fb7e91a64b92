require ["foreverypart","mime","variables","fileinto"];
set "seen" "";
foreverypart :name "outer" {
  if header :mime :subtype "content-type" "alternative" {
    foreverypart :name "inner" {
      set "seen" "${seen}i";
      if header :mime :subtype "content-type" "html" { break :name "outer"; }
    }
  }
  set "seen" "${seen}o";
}
fileinto "seen-${seen}";
