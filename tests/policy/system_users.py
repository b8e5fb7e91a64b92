"""Throw-away system users (``useradd``) whose homes live in a directory every user can traverse.

mda works in a system user's home with that user's file-system identity, so the home must be
reachable by them, as ``/home`` is: pytest's own temporary directories are private to root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def homes() -> Iterator[Path]:
    """A directory like ``/home``: owned by root, mode 0755, on the same filesystem as ``/tmp``."""
    directory = Path(tempfile.mkdtemp(prefix="mda-homes-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_user(homes: Path) -> Iterator[Callable[..., pwd.struct_passwd]]:
    """Factory: ``make_user(create_home=True)`` adds a user (uid >= 1000) with its home in ``homes``."""
    names: list[str] = []

    def make(*, create_home: bool = True) -> pwd.struct_passwd:
        name = "mdat" + uuid.uuid4().hex[:8]
        home = homes / name
        flag = "--create-home" if create_home else "--no-create-home"
        subprocess.run(["useradd", "--home-dir", str(home), flag, "--shell", "/bin/sh", name], check=True)
        names.append(name)
        return pwd.getpwnam(name)

    yield make
    for name in names:
        subprocess.run(["userdel", name], check=False)


def as_user_file(path: Path, user: pwd.struct_passwd) -> Path:
    """Give ``path`` (a file, FIFO or symlink) to ``user``, as if they had made it."""
    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    return path
