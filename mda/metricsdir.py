"""The directory where every worker writes its metric values (``prometheus_client``'s multiprocess mode).

Apart from ``mda.metrics`` on purpose: it must be set up before that module, which imports
``prometheus_client``, is first imported (``mda.serving``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where ``prometheus_client`` looks for the directory; read once, as that package is imported."""


@contextlib.contextmanager
def multiprocess_directory(owner: tuple[int, int] | None) -> Iterator[Path]:
    """A private directory for the metric files, owned by ``owner`` (uid, gid) when running as root,
    named in the environment for as long as the block runs, then removed."""
    directory = Path(tempfile.mkdtemp(prefix="mda-metrics-"))
    if owner is not None and os.geteuid() == 0:
        os.chown(directory, *owner)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
