"""Hot reload: edit, rename-replace and ConfigMap-style symlink swap, under load; broken files are refused.

A reload changes behaviour for new transactions only (sessions take the state at MAIL), never drops a
listener that stays, and never loses an acknowledged message.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import yaml

from mda.config import current_digest, watched_files
from mda.config import load as load_config
from mda.reload import ConfigWatcher
from tests.clients import Client
from tests.conftest import basic_config
from tests.ops.helpers import MESSAGE, deliver, scrape, stored_files, value
from tests.ops.load import SteadyLoad
from tests.waiting import wait_for, wait_for_async


def _config(root: Path, users: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return basic_config(root, users=users, metrics={"bind": "127.0.0.1:0"}, **overrides)


def _reloads(server: Any, result: str = "success") -> float:
    return value(scrape(server), "mda_config_reloads_total", result=result)


def _rcpt(address: tuple[str, int], recipient: str) -> str:
    with Client(address) as client:
        client.cmd("LHLO x")
        client.cmd("MAIL FROM:<s@example.net>")
        reply = client.cmd(f"RCPT TO:<{recipient}>")
    return f"{reply.code} {reply.enhanced}"


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_edit_in_place_under_load(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    users = {"alice@example.test": {}, "bob@example.test": {}}
    server = start_mda(_config(root, users))
    assert _rcpt(server.lmtp, "dave@example.test") == "550 5.1.1"
    with SteadyLoad(server.lmtp, "alice@example.test") as load:
        wait_for(lambda: load.acknowledged > 5)
        _write(server.config_path, _config(root, {"alice@example.test": {}, "dave@example.test": {}}))
        wait_for(lambda: _reloads(server) == 1)
        assert _rcpt(server.lmtp, "dave@example.test") == "250 2.1.5"
        assert _rcpt(server.lmtp, "bob@example.test") == "550 5.1.1"
        acknowledged_before = load.acknowledged
        wait_for(lambda: load.acknowledged > acknowledged_before + 5)
    assert len(stored_files(root, "alice")) == load.acknowledged
    assert deliver(server.lmtp, ["dave@example.test"]) == [250]


def test_rename_replace(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(_config(root, {"alice@example.test": {}}))
    with SteadyLoad(server.lmtp, "alice@example.test") as load:
        wait_for(lambda: load.acknowledged > 3)
        temporary = server.config_path.with_name(".mda.yaml.swp")
        _write(temporary, _config(root, {"alice@example.test": {}, "erin@example.test": {}}))
        os.rename(temporary, server.config_path)
        wait_for(lambda: _reloads(server) == 1)
        assert deliver(server.lmtp, ["erin@example.test"]) == [250]
    assert len(stored_files(root, "alice")) == load.acknowledged
    assert len(stored_files(root, "erin")) == 1


def test_a_reload_that_moves_mailboxes_is_seen_by_the_next_delivery(start_mda, tmp_path: Path) -> None:
    """Merged mailbox settings and rendered paths are kept between recipients: a reload that changes the
    domain's path, then ``storage.path`` and a domain quota, is seen by the next RCPT all the same."""
    root = tmp_path / "mail"

    def config(storage: str, domain: dict[str, Any]) -> dict[str, Any]:
        settings = _config(root, {}, domains={"example.test": {"any_user": True, **domain}})
        settings["storage"]["path"] = f"{root}/{storage}/{{domain}}/{{user}}/Maildir"
        return settings

    def files(*parts: str) -> int:
        new = root.joinpath(*parts, "zed", "Maildir", "new")
        return len(list(new.iterdir())) if new.is_dir() else 0

    server = start_mda(config("a", {}))
    assert deliver(server.lmtp, ["zed@example.test"]) == [250]
    assert files("a", "example.test") == 1
    _write(server.config_path, config("a", {"path": f"{root}/b/{{user}}/Maildir"}))
    wait_for(lambda: _reloads(server) == 1)
    assert deliver(server.lmtp, ["zed@example.test"]) == [250]
    assert (files("a", "example.test"), files("b")) == (1, 1)
    _write(server.config_path, config("c", {"quota_messages": 1}))
    wait_for(lambda: _reloads(server) == 2)
    assert deliver(server.lmtp, ["zed@example.test"]) == [250]
    assert (files("a", "example.test"), files("b"), files("c", "example.test")) == (1, 1, 1)
    assert _rcpt(server.lmtp, "zed@example.test") == "552 5.2.2", "the new quota applies to the new path"
    _write(server.config_path, config("a", {}))
    wait_for(lambda: _reloads(server) == 3)
    assert deliver(server.lmtp, ["zed@example.test"]) == [250]
    assert (files("a", "example.test"), files("c", "example.test")) == (2, 1)


def test_configmap_symlink_swap_of_users_file(start_mda, tmp_path: Path) -> None:
    """Kubernetes mounts ``users.yaml -> ..data/users.yaml`` and swaps ``..data`` atomically."""
    root = tmp_path / "mail"
    mount = tmp_path / "configmap"
    first = mount / "..2026_01_01_00_00_00.000000001"
    first.mkdir(parents=True)
    _write(first / "users.yaml", {"alice@example.test": {}, "bob@example.test": {}})
    (mount / "..data").symlink_to(first.name)
    (mount / "users.yaml").symlink_to("..data/users.yaml")
    config = basic_config(root, metrics={"bind": "127.0.0.1:0"}, users_file=str(mount / "users.yaml"))
    del config["users"]
    server = start_mda(config)
    with SteadyLoad(server.lmtp, "alice@example.test") as load:
        wait_for(lambda: load.acknowledged > 3)
        second = mount / "..2026_01_01_00_00_01.000000002"
        second.mkdir()
        _write(second / "users.yaml", {"alice@example.test": {}, "frank@example.test": {}})
        (mount / "..data_tmp").symlink_to(second.name)
        os.rename(mount / "..data_tmp", mount / "..data")
        wait_for(lambda: _reloads(server) == 1)
        assert _rcpt(server.lmtp, "frank@example.test") == "250 2.1.5"
        assert _rcpt(server.lmtp, "bob@example.test") == "550 5.1.1"
    assert len(stored_files(root, "alice")) == load.acknowledged


def test_broken_file_keeps_the_running_configuration(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(_config(root, {"alice@example.test": {}}))
    server.config_path.write_text(server.config_path.read_text() + "no_such_key: 1\n")
    wait_for(lambda: _reloads(server, "failure") == 1)
    assert deliver(server.lmtp, ["alice@example.test"]) == [250]
    assert _reloads(server) == 0
    failed = [line for line in server.wait_for_log("event=reload_failed").splitlines() if "event=reload_failed" in line]
    assert failed and f"file={server.config_path}" in failed[0] and "no_such_key" in failed[0]
    assert "line=" in failed[0] and "line=None" not in failed[0]
    # fixing the file reloads it
    _write(server.config_path, _config(root, {"alice@example.test": {}, "gina@example.test": {}}))
    wait_for(lambda: _reloads(server) == 1)
    assert deliver(server.lmtp, ["gina@example.test"]) == [250]


def test_transaction_under_way_keeps_its_configuration(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(_config(root, {"alice@example.test": {}, "bob@example.test": {}}))
    with Client(server.lmtp) as client:
        client.cmd("LHLO x")
        assert client.cmd("MAIL FROM:<s@example.net>").code == 250
        _write(server.config_path, _config(root, {"alice@example.test": {}}))
        server.signal(signal.SIGHUP)
        wait_for(lambda: _reloads(server) >= 1)
        assert client.cmd("RCPT TO:<bob@example.test>").code == 250, "the open transaction keeps the old users"
        assert [r.code for r in client.data(MESSAGE)] == [250]
        assert client.cmd("MAIL FROM:<s@example.net>").code == 250
        reply = client.cmd("RCPT TO:<bob@example.test>")
        assert (reply.code, reply.enhanced) == (550, "5.1.1"), "the next transaction uses the new users"
    assert len(stored_files(root, "bob")) == 1


def test_sighup_reloads_and_listeners_follow_the_file(start_mda, tmp_path: Path) -> None:
    """One process opens an added listener itself, and its sessions on kept and removed listeners go on
    (several workers are replaced instead: tests/ops/test_workers.py)."""
    root = tmp_path / "mail"
    config = _config(root, {"alice@example.test": {}}, workers=1)
    server = start_mda(config)
    socket_path = tmp_path / "lmtp.sock"
    lmtp = server.lmtp
    with Client(server.smtp) as open_smtp:
        open_smtp.cmd("EHLO x")
        config["listeners"] = [config["listeners"][0], {"protocol": "lmtp", "bind": f"unix:{socket_path}"}]
        _write(server.config_path, config)
        server.signal(signal.SIGHUP)
        wait_for(lambda: _reloads(server) >= 1)
        wait_for(socket_path.exists)
        assert deliver(str(socket_path), ["alice@example.test"]) == [250]
        assert deliver(lmtp, ["alice@example.test"]) == [250], "a kept listener stays open"
        # the SMTP listener was removed: no new connections, but the open session goes on
        assert open_smtp.cmd("NOOP").code == 250
        try:
            Client(server.smtp, timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused


async def _checked(watcher: ConfigWatcher) -> None:
    """Return once the watcher's scheduled check has run (whether or not it found a change)."""
    await wait_for_async(lambda: not watcher.check_pending, what="the scheduled check")


async def _watch(path: Path, during: Any) -> list[str]:
    """What ``on_change`` saw once ``during(watcher)`` ran and the debounced check it scheduled ran."""
    seen: list[str] = []
    watcher = ConfigWatcher(asyncio.get_running_loop(), [path], lambda: seen.append(path.read_text()), debounce=0.01)
    during(watcher)
    assert watcher.check_pending
    await _checked(watcher)
    return seen


def test_an_edit_during_a_reload_is_not_swallowed(tmp_path: Path) -> None:
    path = tmp_path / "mda.yaml"
    path.write_text("first")

    read_by_the_reload = current_digest([path])

    def edit_while_reloading(watcher: ConfigWatcher) -> None:
        path.write_text("second")  # written after a reload read "first", before it finished
        watcher.poke()
        watcher.set_paths([path], running=read_by_the_reload)  # that reload finishes with what it read

    assert asyncio.run(_watch(path, edit_while_reloading)) == ["second"]


def test_an_edit_made_while_mda_starts_is_reloaded(tmp_path: Path) -> None:
    """The file changed after mda parsed it but before the watch began: no event will come, the start check sees it."""
    path = tmp_path / "mda.yaml"
    path.write_text("first")
    parsed = current_digest([path])
    path.write_text("second")

    async def run() -> list[str]:
        seen: list[str] = []
        watcher = ConfigWatcher(
            asyncio.get_running_loop(), [path], lambda: seen.append(path.read_text()), running=parsed, debounce=0.01
        )
        watcher.start()
        try:
            await _checked(watcher)
        finally:
            watcher.stop()
        return seen

    assert asyncio.run(run()) == ["second"]


def test_a_loaded_configuration_is_what_the_watcher_sees_on_disk(tmp_path: Path) -> None:
    """The running version (``Config.digest``, from the bytes parsed) equals the watcher's reading of the
    same unchanged files, users file included: otherwise every start would reload once for nothing."""
    _write(tmp_path / "users.yaml", {"alice@example.test": {}})
    config_data = basic_config(tmp_path / "mail", users_file="users.yaml")
    del config_data["users"]
    _write(tmp_path / "mda.yaml", config_data)
    config = load_config(tmp_path / "mda.yaml")
    assert config.users_file is not None
    assert config.digest == current_digest(watched_files(config))
    (tmp_path / "users.yaml").write_text("bob@example.test: {}\n")
    assert config.digest != current_digest(watched_files(config))


def test_a_burst_of_events_is_one_check_and_unchanged_content_none(tmp_path: Path) -> None:
    path = tmp_path / "mda.yaml"
    path.write_text("first")

    def burst(watcher: ConfigWatcher) -> None:
        path.write_text("second")
        for _ in range(5):
            watcher.poke()

    assert asyncio.run(_watch(path, burst)) == ["second"]

    def touch(watcher: ConfigWatcher) -> None:
        path.write_text("second")
        watcher.poke()

    assert asyncio.run(_watch(path, touch)) == []
