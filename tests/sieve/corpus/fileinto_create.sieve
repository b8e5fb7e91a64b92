require ["fileinto", "mailbox"];
fileinto :create "Archive";
