require "fileinto";
if size :over 100 { fileinto "Over100"; }
if size :under 1K { fileinto "Under1K"; }
if size :over 1M { fileinto "Never"; }
if size :under 10 { fileinto "Never2"; }
