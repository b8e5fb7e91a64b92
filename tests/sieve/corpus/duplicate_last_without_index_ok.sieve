require ["duplicate"];
if duplicate :last :seconds 60 { discard; }
