require ["fileinto", "relational", "comparator-i;ascii-numeric"];

# Sieve Filter
if allof (header :value "gt" :comparator "i;ascii-numeric" "X-Spam-Score" "4", size :under 100K)
{
  fileinto "Junk";
  stop;
}
