"""A PostgreSQL server of the test's own (pgserver's build: initdb, pg_ctl), listening on
a Unix socket in its data directory's reach only, that a test may crash and start
again. Never the shared server: taking that one down would break every other test."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pgserver
from pgserver import _commands
from sqlalchemy.engine import make_url


@dataclass
class PrivatePostgres:
    handle: Any
    """pgserver's handle on the server."""
    url: str
    """SQLAlchemy URL of its `postgres` database (psycopg, over the socket)."""

    def crash(self) -> None:
        """Stop it the way a crash does: `pg_ctl stop -m immediate` (every process quits
        at once, no checkpoint; the next start recovers from the WAL)."""
        pg_ctl = _commands.POSTGRES_BIN_PATH / "pg_ctl"
        done = subprocess.run(
            [str(pg_ctl), "-D", str(self.handle.pgdata), "-m", "immediate", "-w", "stop"],
            user=self.handle.system_user,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            log = Path(self.handle.pgdata) / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(
                f"pg_ctl stop failed ({done.returncode}): {done.stdout} {done.stderr}\n{tail}"
            )

    def start(self) -> None:
        """Start it again on the same data directory and socket."""
        with self.handle._lock:
            self.handle.ensure_postgres_running()
        again = _url(self.handle)
        assert again == self.url, f"the server came back elsewhere: {again} != {self.url}"


def _url(handle: Any) -> str:
    parsed = make_url(handle.get_uri()).set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb and start a server in a folder of its own; stopped and removed at the end.

    Not under pytest's temporary folder: as root the server runs as another user, who
    must be able to reach its data directory, and every pytest session that starts
    (any on this machine) makes `/tmp/pytest-of-<user>` private again."""
    folder = Path(tempfile.mkdtemp(prefix="tollgate-pg-"))
    try:
        handle = pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
        try:
            yield PrivatePostgres(handle, _url(handle))
        finally:
            handle.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
