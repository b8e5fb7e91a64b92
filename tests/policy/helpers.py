"""Shared pieces of the recipient-policy tests: a configuration with every kind of recipient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import basic_config

SENDER = "sender@remote.test"
MESSAGE = b"From: sender@remote.test\r\nTo: you\r\nSubject: policy test\r\nMessage-ID: <m1@remote.test>\r\n\r\nbody\r\n"

USERS_FILE = {
    "dave@example.test": {"format": "mbox", "path": "{ROOT}/mbox/{domain}/{user}"},
    "erin@example.test": {"quota": "1K"},
}


def policy_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Four domains (users, any_user, IDN, catch-all), a users file and aliases.

    The users file is written where ``start_mda`` puts the first server's configuration, so the
    relative ``users_file: users.yaml`` resolves next to it.
    """
    root = tmp_path / "mail"
    server_dir = tmp_path / "server0"
    server_dir.mkdir(parents=True, exist_ok=True)
    users = {
        k: {**v, "path": v["path"].replace("{ROOT}", str(root))} if "path" in v else v for k, v in USERS_FILE.items()
    }
    (server_dir / "users.yaml").write_text(yaml.safe_dump(users, allow_unicode=True))
    config = basic_config(
        root,
        domains={
            "example.test": {},
            "any.test": {"any_user": True},
            "bücher.test": {"any_user": True},
            "catch.test": {},
        },
        users_file="users.yaml",
        aliases={
            "postmaster@example.test": "alice@example.test",
            "team@example.test": ["alice@example.test", "bob@example.test"],
            "chain1@example.test": "chain2@example.test",
            "chain2@example.test": "carol@example.test",
            "@catch.test": "bob@example.test",
            # deep0 -> deep1 -> ... -> deep20 -> alice: 21 alias steps, one more than the resolver follows.
            **{f"deep{i}@example.test": f"deep{i + 1}@example.test" for i in range(20)},
            "deep20@example.test": "alice@example.test",
        },
    )
    config.update(overrides)
    return config


def maildir_messages(maildir: Path) -> list[Path]:
    """Every message file in ``new/`` and ``cur/`` of one Maildir (INBOX and folders)."""
    return sorted(p for p in maildir.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))
