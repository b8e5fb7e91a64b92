require ["vacation"];
vacation :seconds 3600 "Away";
