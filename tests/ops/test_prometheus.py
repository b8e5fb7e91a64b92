"""A real Prometheus server (from the distribution) scrapes mda and its query API sees the deliveries."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.ops.helpers import deliver, fetch, metrics_url
from tests.peers import programs
from tests.waiting import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.root
def test_prometheus_scrapes_the_delivered_count(start_mda, tmp_path: Path) -> None:
    binary = programs.require(programs.PROMETHEUS)
    server = start_mda(basic_config(tmp_path / "mail", workers=2, metrics={"bind": "127.0.0.1:0"}))
    assert deliver(server.lmtp, ["alice@example.test", "bob@example.test", "carol@example.test"]) == [250] * 3
    target = urllib.parse.urlsplit(metrics_url(server)).netloc
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: mda\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        query = urllib.parse.quote('sum(mda_deliveries_total{result="delivered"})')

        def delivered() -> float | None:
            try:
                status, body = fetch(f"http://127.0.0.1:{port}/api/v1/query?query={query}")
            except OSError:
                return None
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return float(result[0]["value"][1]) if result else None

        assert wait_for(delivered, timeout=60, interval=0.5) == 3.0
        up_status, body = fetch(f"http://127.0.0.1:{port}/api/v1/query?query=up")
        assert up_status == 200
        assert json.loads(body)["data"]["result"][0]["value"][1] == "1"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
