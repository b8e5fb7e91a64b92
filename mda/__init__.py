"""mda: a mail delivery agent speaking LMTP and SMTP, storing into Maildir and mbox."""

__version__ = "0.1.0"
