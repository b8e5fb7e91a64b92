require "fileinto";
if exists ["from", "subject"] { fileinto "Both"; }
if exists ["from", "x-missing"] { fileinto "Never"; }
if not exists "x-missing" { fileinto "NotMissing"; }
