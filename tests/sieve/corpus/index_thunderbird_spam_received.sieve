require ["fileinto", "index", "regex"];

# Sieve Filter
if header :index 1 :regex "Received" "from [a-z]+\\.example\\.org"
{
  fileinto "Checked";
}
