"""Fixtures of the policy tests: throw-away system users for ``passwd`` domains."""

from __future__ import annotations

from tests.policy.system_users import homes, make_user

__all__ = ["homes", "make_user"]
