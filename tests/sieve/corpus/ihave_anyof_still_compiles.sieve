require ["ihave","fileinto"];
if anyof (ihave "x-frobnicate", true) { fileinto "any"; }
