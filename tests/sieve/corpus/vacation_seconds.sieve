require ["vacation-seconds"];
vacation :seconds 3600 :subject "Away" "Away for an hour";
