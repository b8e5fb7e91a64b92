"""STARTTLS (RFC 3207), implicit TLS (RFC 8314), require_tls and AUTH PLAIN/LOGIN (RFC 4954, 4616)."""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.certificates import self_signed
from tests.clients import Client
from tests.conftest import basic_config
from tests.peers import programs
from tests.protocol.conftest import PASSWORD, client_context

MESSAGE = b"Subject: tls\r\n\r\nbody\r\n"


def _maildir(root: Path, user: str) -> list[Path]:
    return sorted((root / "example.test" / user / "Maildir" / "new").glob("*"))


def _tls_config(root: Path, cert: Path, key: Path, **listener: object) -> dict[str, object]:
    smtp = {"protocol": "smtp", "bind": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key)}, **listener}
    lmtp = {"protocol": "lmtp", "bind": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key)}}
    return basic_config(root, listeners=[lmtp, smtp])


def test_starttls_smtp_announces_delivers_and_marks_esmtps(start_mda, tmp_path, certificate):
    root = tmp_path / "mail"
    server = start_mda(_tls_config(root, *certificate))
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        code, text = client.starttls(context=client_context())
        assert (code, text.split()[0]) == (220, b"2.0.0")
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        client.sendmail("s@remote.test", ["alice@example.test"], MESSAGE)
    stored = _maildir(root, "alice")[0].read_bytes()
    assert b"with ESMTPS id" in stored


def test_starttls_lmtp_after_lhlo_and_session_resets(start_mda, tmp_path, certificate):
    root = tmp_path / "mail"
    server = start_mda(_tls_config(root, *certificate))
    with smtplib.LMTP(*server.lmtp) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        client.starttls(context=client_context())
        # RFC 3207 §4.2: the session starts over; MAIL before a new LHLO is out of sequence.
        code, _ = client.mail("s@remote.test")
        assert code == 503
        client.ehlo("client.test")
        client.sendmail("s@remote.test", ["bob@example.test"], MESSAGE)
    assert b"with LMTPS id" in _maildir(root, "bob")[0].read_bytes()


def test_starttls_refusals(start_mda, tmp_path, certificate):
    root = tmp_path / "mail"
    cert, key = certificate
    broken = tmp_path / "missing.pem"
    config = basic_config(
        root,
        listeners=[
            {"protocol": "smtp", "bind": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key)}},
            {"protocol": "smtp", "bind": "127.0.0.1:0"},
        ],
    )
    server = start_mda(config)
    with Client(server.tcp["smtp"][0]) as client:
        client.cmd("EHLO client.test")
        reply = client.cmd("STARTTLS now")
        assert (reply.code, reply.enhanced) == (501, "5.5.4")
        client.cmd("MAIL FROM:<s@remote.test>")
        reply = client.cmd("STARTTLS")
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
    with Client(server.tcp["smtp"][1]) as client:
        client.cmd("EHLO client.test")
        assert client.cmd("STARTTLS").code == 500
    with smtplib.SMTP(*server.tcp["smtp"][0]) as client:
        client.starttls(context=client_context())
        client.ehlo("client.test")
        code, text = client.docmd("STARTTLS")
        assert (code, text.split()[0]) == (503, b"5.5.1")
    # A certificate removed after start: the one loaded at start stays in use, and the log says so
    # (with nothing ever loaded, STARTTLS is not offered: test_starttls_is_not_offered_...).
    config["listeners"][0]["tls"] = {"cert": str(broken), "key": str(key)}
    server2 = start_mda_with_missing_cert(start_mda, config, broken, cert)
    with Client(server2.tcp["smtp"][0]) as client:
        client.cmd("EHLO client.test")
        broken.unlink()
        reply = client.cmd("STARTTLS")
        assert (reply.code, reply.enhanced) == (220, "2.0.0")
    log = server2.wait_for_log("event=tls_reload_failed")
    failed = [line for line in log.splitlines() if "event=tls_reload_failed " in line]
    assert f" cert={broken} " in failed[0]  # a worker's lines carry worker=N after the event


def start_mda_with_missing_cert(start_mda, config, path: Path, cert: Path):
    """The server validates the file at start, so it exists then and is removed mid-session."""
    shutil.copy(cert, path)
    return start_mda(config)


def _read_reply(sock: socket.socket) -> bytes:
    """One complete (possibly multi-line) reply: until a line whose code is followed by a space."""
    data = b""
    while not re.search(rb"(?:^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4000)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_starttls_discards_pipelined_plaintext(start_mda, tmp_path, certificate):
    server = start_mda(_tls_config(tmp_path / "mail", *certificate))
    sock = socket.create_connection(server.smtp, timeout=10)
    try:
        sock.recv(1000)
        sock.sendall(b"EHLO client.test\r\n")
        _read_reply(sock)  # the whole multi-line EHLO reply, up to its last "250 " line
        # RFC 3207 §5: commands sent after STARTTLS in the same packet must not be executed.
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
        assert sock.recv(1000).startswith(b"220 2.0.0")
        tls = client_context().wrap_socket(sock)
        tls.sendall(b"RSET\r\n")
        assert tls.recv(1000).startswith(b"250")
        tls.sendall(b"MAIL FROM:<s@remote.test>\r\n")
        assert tls.recv(1000).startswith(b"503")  # EHLO again first; the injected MAIL never ran
    finally:
        sock.close()


def test_require_tls_refuses_mail_before_starttls(start_mda, tmp_path, certificate):
    server = start_mda(_tls_config(tmp_path / "mail", *certificate, require_tls=True))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        reply = client.cmd("MAIL FROM:<s@remote.test>")
        assert (reply.code, reply.enhanced) == (530, "5.7.0")
    with smtplib.SMTP(*server.smtp) as client:
        client.starttls(context=client_context())
        client.sendmail("s@remote.test", ["alice@example.test"], MESSAGE)


def test_implicit_tls_listener(start_mda, tmp_path, certificate):
    root = tmp_path / "mail"
    cert, key = certificate
    config = basic_config(
        root,
        listeners=[
            {"protocol": "smtp", "bind": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key), "mode": "implicit"}}
        ],
    )
    server = start_mda(config)
    with smtplib.SMTP_SSL(*server.smtp, context=client_context()) as client:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        client.sendmail("s@remote.test", ["carol@example.test"], MESSAGE)
    assert b"with ESMTPS id" in _maildir(root, "carol")[0].read_bytes()
    # A plaintext client on the implicit-TLS port gets no greeting; the server keeps serving.
    with socket.create_connection(server.smtp, timeout=5) as sock:
        sock.sendall(b"EHLO plain\r\n")
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            data = sock.recv(100)
            if not data or not data.startswith(b"220"):
                raise ConnectionError("no plaintext greeting")
    with smtplib.SMTP_SSL(*server.smtp, context=client_context()) as client:
        assert client.noop()[0] == 250


def _auth_config(root: Path, cert: Path, key: Path, users: Path, required: bool = True) -> dict[str, object]:
    return _tls_config(root, cert, key, auth={"required": required, "users_file": str(users)})


def test_auth_plain_and_login_over_tls_mark_esmtpsa(start_mda, tmp_path, certificate, users_file):
    root = tmp_path / "mail"
    server = start_mda(_auth_config(root, *certificate, users_file))
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")  # RFC 4954 §4: not offered without TLS
        code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode())
        assert (code, text.split()[0]) == (538, b"5.7.11")
        code, text = client.mail("s@remote.test")
        assert (code, text.split()[0]) == (530, b"5.7.0")
        client.starttls(context=client_context())
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
        client.user, client.password = "alice", PASSWORD
        code, text = client.auth("PLAIN", client.auth_plain)
        assert (code, text.split()[0]) == (235, b"2.7.0")
        code, text = client.docmd("AUTH PLAIN")
        assert (code, text.split()[0]) == (503, b"5.5.1")
        client.sendmail("s@remote.test", ["alice@example.test"], MESSAGE)
    assert b"with ESMTPSA id" in _maildir(root, "alice")[0].read_bytes()
    with smtplib.SMTP(*server.smtp) as client:
        client.starttls(context=client_context())
        client.ehlo("client.test")
        client.user, client.password = "alice", PASSWORD
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235


def test_auth_failures_are_535_and_slow_down(start_mda, tmp_path, certificate, users_file):
    server = start_mda(_auth_config(tmp_path / "mail", *certificate, users_file))
    wrong = base64.b64encode(b"\0alice\0wrong").decode()
    with Client(server.smtp) as raw:
        raw.cmd("EHLO client.test")
        assert raw.cmd("AUTH CRAM-MD5").code in (504, 538)
    with smtplib.SMTP(*server.smtp) as client:
        client.starttls(context=client_context())
        client.ehlo("client.test")
        timings = []
        for response in (wrong, wrong, wrong, base64.b64encode(b"\0plain\0not-a-hash").decode()):
            started = time.monotonic()
            code, text = client.docmd("AUTH", f"PLAIN {response}")
            timings.append(time.monotonic() - started)
            assert (code, text.split()[0]) == (535, b"5.7.8")
        assert timings[2] > timings[0] + 0.5  # the delay grows with repeated failures
        assert client.docmd("AUTH", "PLAIN !!notbase64")[0] == 501
        code, _ = client.docmd("AUTH", "LOGIN")
        assert code == 334
        assert client.docmd("*")[0] == 501  # cancelled (RFC 4954 §4)
        assert client.noop()[0] == 250
        code, text = client.mail("s@remote.test")
        assert (code, text.split()[0]) == (530, b"5.7.0")


@pytest.mark.root
def test_swaks_tls_auth_pipelining(start_mda, tmp_path, certificate, users_file):
    swaks = programs.require(programs.SWAKS)
    root = tmp_path / "mail"
    server = start_mda(_auth_config(root, *certificate, users_file))
    host, port = server.smtp
    result = subprocess.run(
        [
            swaks,
            "--server",
            host,
            "--port",
            str(port),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
            "--pipeline",
            "--from",
            "s@remote.test",
            "--to",
            "bob@example.test",
            "--helo",
            "client.test",
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    assert b"with ESMTPSA id" in _maildir(root, "bob")[0].read_bytes()
    result = subprocess.run(
        [
            swaks,
            "--server",
            host,
            "--port",
            str(port),
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
            "--from",
            "s@remote.test",
            "--to",
            "bob@example.test",
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "535 5.7.8" in result.stdout


def test_certificate_is_reread_when_it_changes(start_mda, tmp_path, certificate):
    cert, key = certificate
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    server = start_mda(_tls_config(tmp_path / "mail", live_cert, live_key))

    def served_certificate() -> bytes:
        with smtplib.SMTP(*server.smtp) as client:
            client.starttls(context=client_context())
            return client.sock.getpeercert(binary_form=True)

    first = served_certificate()
    self_signed(live_cert, live_key, "renewed.test")
    assert served_certificate() != first
    assert ssl.DER_cert_to_PEM_cert(served_certificate()) == live_cert.read_text()


def _new_certificate(cert: Path, key: Path, name: str) -> None:
    """Write a fresh self-signed pair elsewhere, then move it into place (as certbot's renewal does)."""
    staging = cert.parent / f"staging-{name}"
    staging.mkdir()
    self_signed(staging / "cert", staging / "key", name)
    (staging / "key").rename(key)
    (staging / "cert").rename(cert)
    staging.rmdir()


def test_implicit_tls_picks_up_a_replaced_certificate_and_says_when_it_keeps_the_old(start_mda, tmp_path, certificate):
    cert, key = certificate
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    tls = {"cert": str(live_cert), "key": str(live_key), "mode": "implicit"}
    # One process: each worker process reloads the files itself and says so once per change.
    listeners = [{"protocol": "smtp", "bind": "127.0.0.1:0", "tls": tls}]
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners, workers=1))

    def served() -> bytes:
        with smtplib.SMTP_SSL(*server.smtp, context=client_context()) as client:
            return client.sock.getpeercert(binary_form=True)

    first = served()
    _new_certificate(live_cert, live_key, "renewed.test")
    renewed = served()
    assert renewed != first and ssl.DER_cert_to_PEM_cert(renewed) == live_cert.read_text()
    assert "event=tls_reloaded" in server.wait_for_log("event=tls_reloaded")
    live_key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    assert served() == renewed
    log = server.wait_for_log("event=tls_reload_failed")
    assert f"event=tls_reload_failed cert={live_cert} key={live_key}" in log and "kept=previous" in log
    assert served() == renewed
    assert log.count("event=tls_reload_failed") == 1  # once per change, not once per handshake


def test_starttls_is_not_offered_without_a_working_certificate(start_mda, tmp_path):
    """A reload gives the SMTP listener TLS files that cannot be loaded: no STARTTLS is offered then."""
    config = basic_config(tmp_path / "mail")
    server = start_mda(config)
    smtp = config["listeners"][1]
    smtp["tls"] = {"cert": str(tmp_path / "none.pem"), "key": str(tmp_path / "none.key")}
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.wait_for_log("event=reloaded")
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 454
        assert client.noop()[0] == 250


# --- root: the TLS files are read as the service user ----------------------------------------------


@pytest.fixture
def service_tls(certificate) -> Iterator[tuple[Path, Path, Path]]:
    """A directory the service user can reach, with a copy of the certificate (0644) and key (0600)."""
    directory = Path(tempfile.mkdtemp(prefix="mda-tls-"))
    os.chmod(directory, 0o755)
    cert, key = directory / "cert.pem", directory / "key.pem"
    shutil.copy(certificate[0], cert)
    shutil.copy(certificate[1], key)
    os.chmod(cert, 0o644)
    os.chmod(key, 0o600)
    mail = directory / "mail"
    mail.mkdir()
    vmail = pwd.getpwnam("vmail")
    os.chown(mail, vmail.pw_uid, vmail.pw_gid)
    yield directory, cert, key
    shutil.rmtree(directory, ignore_errors=True)


def _run(directory: Path, config: dict[str, object], command: str) -> subprocess.CompletedProcess[str]:
    path = directory / "mda.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "mda", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        check=False,
    )


@pytest.mark.root
@pytest.mark.parametrize("workers", [1, 2])
def test_a_key_the_service_user_cannot_read_refuses_the_start(service_tls, workers: int) -> None:
    directory, cert, key = service_tls
    config = _tls_config(directory / "mail", cert, key)
    config.update(user="vmail", workers=workers)
    for command in ("serve", "check-config"):
        result = _run(directory, config, command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"TLS key {key} is not readable by user vmail" in result.stderr, command
        assert f"chgrp ssl-cert {key} && chmod g+r {key} && adduser vmail ssl-cert" in result.stderr
        assert "listening" not in result.stdout
    shutil.chown(key, group="ssl-cert")
    os.chmod(key, 0o640)  # readable by a group vmail is not in: the message names that group
    result = _run(directory, config, "check-config")
    assert result.returncode == 1 and "add vmail to group ssl-cert (adduser vmail ssl-cert)" in result.stderr


@pytest.mark.root
def test_a_key_readable_through_the_service_users_group_starts_with_starttls(start_mda, service_tls) -> None:
    directory, cert, key = service_tls
    shutil.chown(key, group="vmail")
    os.chmod(key, 0o640)
    config = _tls_config(directory / "mail", cert, key)
    config["user"] = "vmail"
    assert _run(directory, config, "check-config").returncode == 0
    server = start_mda(config)
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context())[0] == 220
        client.ehlo("client.test")
        client.sendmail("s@remote.test", ["alice@example.test"], MESSAGE)
    assert b"with ESMTPS id" in _maildir(directory / "mail", "alice")[0].read_bytes()
