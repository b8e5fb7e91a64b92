"""systemd's readiness protocol (sd_notify(3)) in a few lines, without a dependency.

With ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and waits for ``READY=1`` before it calls the service started; ``RELOADING=1`` then
``READY=1`` bracket a reload, ``STOPPING=1`` announces the shutdown. Without the variable every call
does nothing, so the server runs the same outside systemd.
"""

from __future__ import annotations

import contextlib
import os
import socket

ENV = "NOTIFY_SOCKET"


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``) as one datagram; False when not under systemd or on error."""
    address = os.environ.get(ENV)
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
        return True
    return False


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    return notify("RELOADING=1")


def stopping() -> bool:
    return notify("STOPPING=1")
