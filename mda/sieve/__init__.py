"""Sieve mail filtering (RFC 5228 and extensions) for final delivery, matching Dovecot Pigeonhole."""
