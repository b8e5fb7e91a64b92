require ["include"];
include :global "nested";
