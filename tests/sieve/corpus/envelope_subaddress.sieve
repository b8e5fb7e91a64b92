require ["fileinto", "envelope", "subaddress", "variables"];
if envelope :detail :matches "to" "*" {
    fileinto "${1}";
}
if envelope :user "to" "alice" { fileinto "UserAlice"; }
