"""``mda serve``: one process, or a supervisor and its workers (``workers: N``), chosen here.

Above both on purpose. With several workers, ``prometheus_client`` must find its multiprocess directory
when it is first imported, and ``mda.app``, ``mda.workers`` and ``mda.metrics`` all import it: this module
imports none of them until that directory is set, so the order holds by the import structure
(tests/ops/test_metrics_mode.py checks that the commands' modules leave ``prometheus_client`` unimported).
"""

from __future__ import annotations

from mda import logs
from mda.binding import Identity, service_identity
from mda.config import Config
from mda.metricsdir import multiprocess_directory
from mda.tls import unreadable_files_as


class TlsFilesUnreadable(OSError):
    """A TLS certificate or key the service user cannot load: starting would silently drop TLS."""


def check_tls_files(config: Config, identity: Identity | None) -> None:
    """Refuse to start when the service user cannot load every TLS certificate and key (mda.tls)."""
    problems = unreadable_files_as(config, identity)
    if problems:
        raise TlsFilesUnreadable("; ".join(problems))


def serve(config: Config) -> int:
    """Run the server until a signal stops it; returns the exit code.

    More than one worker (``workers: N``, or ``auto`` on a machine with several cores) hands over to the
    supervisor in ``mda.workers`` (one process per worker, metrics aggregated); otherwise this process
    serves alone (``mda.app``).
    """
    logs.setup(config.log_format, config.log_level)
    identity = service_identity(config)
    check_tls_files(config, identity)
    workers = config.worker_count()
    if workers > 1:
        with multiprocess_directory((identity.uid, identity.gid) if identity is not None else None):
            from mda.workers import Supervisor  # imports prometheus_client: only now, in multiprocess mode

            return Supervisor(config, workers).run()
    from mda.app import Application, run_loop

    return run_loop(Application(config).run())
