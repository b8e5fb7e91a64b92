"""Real peer programs (Dovecot, ...) run as private instances for end-to-end tests."""
