"""Postfix asks mda's ``protocol: policy`` listener at RCPT (contrib/postfix/main.cf.policy).

An unknown user is refused in Postfix's own SMTP dialogue, so nothing enters Postfix's queue and no
bounce is ever sent (no backscatter); a mailbox too full for the announced SIZE is refused the same way;
a known user passes and is delivered over LMTP.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.conftest import RunningServer
from tests.integration.test_postfix_e2e import DEFAULT_LMTP, SENDER, PostfixDir, mda_config, message, snippet
from tests.peers.postfix import queue_is_empty, start_postfix

pytestmark = pytest.mark.root

DEFAULT_POLICY = "inet:127.0.0.1:10031"


@pytest.mark.parametrize("transport", ["inet", "unix"])
def test_unknown_users_are_refused_in_the_smtp_dialogue(
    transport: str, postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    directory, started = postfix_factory
    mail_root = directory / "mail"
    mail_root.mkdir(mode=0o755)
    policy_dir = directory / "policy"
    policy_dir.mkdir(mode=0o755)
    policy_socket = policy_dir / "policy.sock"
    policy_listener = (
        {"protocol": "policy", "bind": "127.0.0.1:0"}
        if transport == "inet"
        else {"protocol": "policy", "bind": f"unix:{policy_socket}", "socket_mode": "0666"}
    )
    server = start_mda(mda_config(mail_root, [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, policy_listener]))
    policy = f"inet:127.0.0.1:{server.tcp['policy'][0][1]}" if transport == "inet" else f"unix:{policy_socket}"
    settings = {
        **snippet("main.cf.lmtp-inet", {DEFAULT_LMTP: f"[127.0.0.1]:{server.lmtp[1]}"}),
        **snippet("main.cf.policy", {DEFAULT_POLICY: policy}),
    }
    assert settings["smtpd_recipient_restrictions"] == f"check_policy_service {policy}"
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    wire = message("policy")
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail(SENDER, ["SIZE=4096"])[0] == 250
        code, text = client.rcpt("nobody@example.test")
        assert code in (550, 554) and text.startswith(b"5.1.1 "), (code, text)
        code, text = client.rcpt("full@example.test")  # quota 1K, SIZE=4096
        assert (code, text[:6]) == (552, b"5.2.2 "), (code, text)
        assert client.rcpt("alice@example.test")[0] == 250
        assert client.data(wire)[0] == 250

    assert "relay=" in postfix.wait_for_status("alice@example.test", "sent")
    [stored] = list((mail_root / "example.test/alice/Maildir/new").iterdir())
    assert stored.read_bytes().endswith(wire.replace(b"\r\n", b"\n"))
    log = postfix.log()
    assert "NOQUEUE: reject: RCPT from" in log and "<nobody@example.test>" in log
    assert postfix.delivery_lines("nobody@example.test") == []
    assert postfix.delivery_lines("full@example.test") == []
    assert "status=bounced" not in log
    assert queue_is_empty(postfix), log


def test_postfix_defers_when_mda_does_not_answer(
    postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    """mda stopped: Postfix applies smtpd_policy_service_default_action, a 4xx, never an acceptance."""
    directory, started = postfix_factory
    mail_root = directory / "mail"
    mail_root.mkdir(mode=0o755)
    server = start_mda(
        mda_config(
            mail_root, [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "policy", "bind": "127.0.0.1:0"}]
        )
    )
    policy = f"inet:127.0.0.1:{server.tcp['policy'][0][1]}"
    settings = {
        **snippet("main.cf.lmtp-inet", {DEFAULT_LMTP: f"[127.0.0.1]:{server.lmtp[1]}"}),
        **snippet("main.cf.policy", {DEFAULT_POLICY: policy}),
        "smtpd_policy_service_timeout": "5s",
        "smtpd_policy_service_try_limit": "1",
    }
    postfix = start_postfix(directory, settings)
    started.append(postfix)
    server.stop()
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60) as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:6]) == (451, b"4.3.5 "), (code, text)
    assert queue_is_empty(postfix)
