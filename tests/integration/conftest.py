"""Fixtures of the integration tests: private Dovecot and Postfix instances (tests/peers/)."""

from tests.peers.dovecot import dovecot_factory
from tests.peers.postfix import postfix_factory

__all__ = ["dovecot_factory", "postfix_factory"]
