"""Server-side TLS contexts for listeners (RFC 3207 STARTTLS, RFC 8314 implicit TLS).

A context is built from the listener's current ``tls`` settings when a session needs it and cached by
the certificate's and key's path and modification time: a renewed certificate (certbot rewriting the
files, a reload pointing at new ones) is used by the next session without a restart, and an unchanged
one costs a ``stat`` per session rather than a PEM parse.
"""

from __future__ import annotations

import os
import ssl
import threading

from mda.config import TlsSettings

_cache: dict[tuple[str, str], tuple[tuple[int, int], ssl.SSLContext]] = {}
_lock = threading.Lock()


class TlsUnavailable(Exception):
    """The certificate or key cannot be loaded; the client gets ``454 4.7.0`` (RFC 3207 §4)."""


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for these settings, rebuilt when either file changed since the last call."""
    cert, key = str(settings.cert), str(settings.key)
    try:
        stamp = (os.stat(cert).st_mtime_ns, os.stat(key).st_mtime_ns)
    except OSError as error:
        raise TlsUnavailable(f"cannot stat certificate or key: {error}") from error
    with _lock:
        cached = _cache.get((cert, key))
        if cached is not None and cached[0] == stamp:
            return cached[1]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TlsUnavailable(f"cannot load certificate {cert}: {error}") from error
    with _lock:
        _cache[(cert, key)] = (stamp, context)
    return context


def listener_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context an implicit-TLS listener is created with (RFC 8314 §3.3).

    The listening socket keeps one ``SSLContext`` for its life, so the certificate is swapped in per
    handshake: the SNI callback (called for every ClientHello, with or without a server name) replaces
    the connection's context with the current one from ``server_context``.
    """
    base = server_context(settings)
    outer = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    outer.minimum_version = ssl.TLSVersion.TLSv1_2
    outer.load_cert_chain(str(settings.cert), str(settings.key))

    def swap(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        try:
            connection.context = server_context(settings)
        except TlsUnavailable:
            connection.context = base

    outer.sni_callback = swap
    return outer
