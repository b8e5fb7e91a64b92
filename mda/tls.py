"""Server-side TLS contexts for listeners (RFC 3207 STARTTLS, RFC 8314 implicit TLS).

A context is built from the listener's current ``tls`` settings when a session needs it and cached (in
the process's ``TlsContexts``) by the certificate's and key's path and modification time: a renewed
certificate (certbot rewriting the files, a reload pointing at new ones) is used by the next session
without a restart, and an unchanged one costs a ``stat`` per session rather than a PEM parse. When
changed files cannot be loaded (a renewed key readable by root only, a half-written file), the previous
context stays in use and an ``error`` line says so once per change: never a silent switch, never a
session without TLS.

A TLS listener whose files mda cannot read as the user it runs as would advertise STARTTLS and answer
every attempt with ``454``, a silent downgrade: ``unreadable_files`` checks them, as that user, before
``serve`` binds anything and in ``check-config``.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import ssl
import stat
import threading

from mda import logs
from mda.binding import Identity, drop_privileges
from mda.config import Config, TlsSettings

CERT_GROUP = "ssl-cert"
"""The group Debian and Ubuntu give read access to private keys (``/etc/ssl/private``)."""


class TlsUnavailable(Exception):
    """The certificate or key cannot be loaded; the client gets ``454 4.7.0`` (RFC 3207 §4)."""


class TlsContexts:
    """The TLS contexts of one serving process (``Application.tls``), cached by their files' versions."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[tuple[int, int], ssl.SSLContext]] = {}
        self._failed: dict[tuple[str, str], tuple[int, int] | None] = {}
        """The file versions that could not be loaded (logged once each)."""
        self._lock = threading.Lock()

    def server_context(self, settings: TlsSettings) -> ssl.SSLContext:
        """The context for these settings, rebuilt when either file changed since the last call.

        Changed files that cannot be loaded (unreadable, missing, a key not matching its certificate yet)
        keep the previous context, with one ``tls_reload_failed`` error line per change; only with no
        previous context is the error raised.
        """
        cert, key = str(settings.cert), str(settings.key)
        stamp: tuple[int, int] | None
        try:
            stamp = (os.stat(cert).st_mtime_ns, os.stat(key).st_mtime_ns)
        except OSError:
            stamp = None
        with self._lock:
            cached = self._cache.get((cert, key))
            if cached is not None and cached[0] == stamp:
                return cached[1]
        try:
            context = _load(cert, key)
        except TlsUnavailable as error:
            if cached is None:
                raise
            with self._lock:
                first = (cert, key) not in self._failed or self._failed[(cert, key)] != stamp
                self._failed[(cert, key)] = stamp
            if first:
                logs.event("tls_reload_failed", logging.ERROR, cert=cert, key=key, error=str(error), kept="previous")
            return cached[1]
        if stamp is not None:
            with self._lock:
                self._cache[(cert, key)] = (stamp, context)
                self._failed.pop((cert, key), None)
        if cached is not None:
            logs.event("tls_reloaded", cert=cert)
        return context

    def available(self, settings: TlsSettings) -> bool:
        """True when a context can be had now: STARTTLS is offered only then (RFC 3207 §4: no 454 by design)."""
        try:
            self.server_context(settings)
        except TlsUnavailable:
            return False
        return True

    def listener_context(self, settings: TlsSettings) -> ssl.SSLContext:
        """The context an implicit-TLS listener is created with (RFC 8314 §3.3).

        The listening socket keeps one ``SSLContext`` for its life, so the certificate is swapped in per
        handshake: the SNI callback (called for every ClientHello, with or without a server name) replaces
        the connection's context with the current one from ``server_context``.
        """
        base = self.server_context(settings)
        outer = _load(str(settings.cert), str(settings.key))

        def swap(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
            try:
                connection.context = self.server_context(settings)
            except TlsUnavailable as error:  # both files gone: keep serving what was loaded, loudly
                logs.event("tls_unavailable", logging.ERROR, cert=str(settings.cert), error=str(error), kept="previous")
                connection.context = base

        outer.sni_callback = swap
        return outer


def _load(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TlsUnavailable(f"cannot load certificate {cert} or key {key}: {error}") from error
    return context


# --- start-up check --------------------------------------------------------------------------------


def _hint(path: str, user: str) -> str:
    """How to give ``user`` read access to ``path``: the group that needs it, named."""
    try:
        info = os.stat(path)
    except OSError:
        return f"make {path} and its directories readable by a group {user} is in"
    if info.st_mode & stat.S_IRGRP:
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        return f"its group {group} can read it: add {user} to group {group} (adduser {user} {group})"
    return (
        f"give a group {user} is in read access, e.g. Debian's {CERT_GROUP}: "
        f"chgrp {CERT_GROUP} {path} && chmod g+r {path} && adduser {user} {CERT_GROUP}"
    )


def unreadable_files(config: Config, user: str) -> list[str]:
    """One line per TLS certificate or key this process cannot load, naming the file and the fix."""
    problems: list[str] = []
    checked: set[tuple[str, str]] = set()
    for listener in config.listeners:
        if listener.tls is None:
            continue
        cert, key = str(listener.tls.cert), str(listener.tls.key)
        if (cert, key) in checked:
            continue
        checked.add((cert, key))
        broken = False
        for kind, path in (("certificate", cert), ("key", key)):
            try:
                with open(path, "rb"):
                    pass
            except PermissionError:
                problems.append(f"TLS {kind} {path} is not readable by user {user}: {_hint(path, user)}")
                broken = True
            except OSError as error:
                problems.append(f"TLS {kind} {path}: {error.strerror}")
                broken = True
        if not broken:
            try:
                _load(cert, key)
            except TlsUnavailable as error:
                problems.append(str(error))
    return problems


def unreadable_files_as(config: Config, identity: Identity | None) -> list[str]:
    """``unreadable_files`` as the user mda will run as: checked in a child that drops to it first."""
    if identity is None or os.geteuid() != 0:
        return unreadable_files(config, identity.name if identity else pwd.getpwuid(os.geteuid()).pw_name)
    if not any(listener.tls is not None for listener in config.listeners):
        return []
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, try, report, exit without running any cleanup
        code = 1
        try:
            os.close(read_fd)
            drop_privileges(identity)
            os.write(write_fd, "\n".join(unreadable_files(config, identity.name)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        chunks.append(reader.read())
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return [f"cannot check the TLS files as user {identity.name}"]
    text = b"".join(chunks).decode()
    return text.splitlines() if text else []
