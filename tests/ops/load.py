"""A steady background load for reload and shutdown tests: it counts every ``250`` it was given."""

from __future__ import annotations

import threading

from tests.clients import Client, transaction
from tests.ops.helpers import MESSAGE


class SteadyLoad:
    """Threads that deliver to one recipient in a loop until stopped; ``acknowledged`` counts 250s."""

    def __init__(self, address: tuple[str, int] | str, recipient: str, threads: int = 2) -> None:
        self.address = address
        self.recipient = recipient
        self.acknowledged = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with Client(self.address, timeout=15) as client:
                    client.cmd("LHLO load.example")
                    for _ in range(5):
                        if self._stop.is_set():
                            break
                        _, data = transaction(client, "load@example.net", [self.recipient], MESSAGE)
                        if data[0].code == 250:
                            with self._lock:
                                self.acknowledged += 1
                        else:
                            self.errors.append(str(data[0]))
            except (OSError, AssertionError) as error:
                # A refused or closed connection is not a loss: nothing was acknowledged on it.
                self.errors.append(repr(error))
