"""Settings that need root, checked against the process that would run them, before anything starts.

A configuration can be valid and still unable to work for the user mda runs as: ``serve`` would then
start, and fail at the first ``chown`` of a socket or at every delivery into a home directory (``451
4.3.0`` forever, while ``RCPT`` said ``250``). ``check-config``, run as the user ``serve`` will run as (the
systemd unit's ``ExecStartPre``), and ``serve`` itself refuse such a combination and say what to change.
"""

from __future__ import annotations

import os

from mda.config import Config
from mda.identity import names_root


def problems(config: Config, euid: int | None = None) -> list[str]:
    """What cannot work when mda runs with effective uid ``euid`` (this process's by default).

    - ``socket_owner`` is applied with ``chown`` when the socket is bound, before ``user:`` takes
      effect: only a process started as root may do it.
    - ``passwd: true`` domains write into each system user's home as that user: ``serve`` must be
      started as root and stay root (no ``user:``).
    """
    uid = os.geteuid() if euid is None else euid
    root = uid == 0
    found: list[str] = []
    for listener in config.listeners:
        if listener.bind.is_unix and listener.socket_owner and not root:
            found.append(
                f"listeners: {listener.label}: socket_owner {listener.socket_owner}: changing the owner of "
                f"{listener.bind.path} (chown) needs mda to be started as root, and it runs as uid {uid}; "
                'remove socket_owner and let Postfix in through the group: socket_mode: "0660" and '
                'usermod -aG <mda\'s group> postfix (README, "Run behind Postfix")'
            )
    for name, domain in config.domains.items():
        if not domain.passwd:
            continue
        if not root:
            found.append(
                f"domains: {name}: passwd: true delivers into system users' home directories as each user, "
                f"which needs mda serve to be started as root (it runs as uid {uid}); see README, "
                '"System users (passwd: true)"'
            )
        elif config.user and not names_root(config.user):
            found.append(
                f"domains: {name}: passwd: true needs mda to stay root, but user: {config.user} drops root "
                'after binding; remove user: (README, "System users (passwd: true)")'
            )
    return found
