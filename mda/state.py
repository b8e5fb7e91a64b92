"""Where mda keeps state between runs (duplicate log, vacation replies): ``state_dir``.

Its own module because both delivery-time users (``mda.dedupe``, ``mda.filtering``) need the
directory and neither should import the other for it.
"""

from __future__ import annotations

from pathlib import Path

from mda.config import Config
from mda.policy import template_root

STATE_SUBDIR = ".mda-state"
"""Default ``state_dir``: this directory in the fixed root of ``storage.path`` (``/var/vmail/.mda-state``
for the default template). A domain or local part can never be named like this (no leading dot passes
the address checks), so it cannot collide with a mailbox."""


def state_dir(config: Config) -> Path:
    """``state_dir`` if set, else ``STATE_SUBDIR`` under the storage root."""
    if config.state_dir is not None:
        return config.state_dir
    return template_root(config.storage.path) / STATE_SUBDIR
