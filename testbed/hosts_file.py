"""Names the e2e stacks answer to: /etc/hosts lines, locked across concurrent runs."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

HOSTS_FILE = Path("/etc/hosts")


HOSTS_MARK = "# registry-stack e2e"


HOSTS_LOCK = Path("/tmp/registry-stack-e2e-hosts.lock")


@contextlib.contextmanager
def _hosts_file_locked() -> Iterator[None]:
    """Several e2e runs may share one machine: their read-modify-writes of /etc/hosts must
    not interleave, or one run drops the line another just added."""
    with HOSTS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


HOSTS_CACHE_SECONDS = 5.5


def add_hosts_entry(names: list[str], stack: str, address: str = "127.0.0.1") -> None:
    with _hosts_file_locked():
        _drop_hosts_lines(stack)
        with HOSTS_FILE.open("a") as hosts:
            hosts.write(f"{address} {' '.join(names)} {HOSTS_MARK} {stack}\n")
    # dockerd (Go's resolver) re-reads /etc/hosts at most every 5 s: until then a new name
    # does not resolve for `docker pull`.
    time.sleep(HOSTS_CACHE_SECONDS)


def remove_hosts_entries(stack: str) -> None:
    with _hosts_file_locked():
        _drop_hosts_lines(stack)


def _drop_hosts_lines(stack: str) -> None:
    lines = HOSTS_FILE.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.rstrip().endswith(f"{HOSTS_MARK} {stack}")]
    if kept != lines:
        # /etc/hosts may be a bind mount: rewrite in place rather than rename over it.
        HOSTS_FILE.write_text("".join(kept))
