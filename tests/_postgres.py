"""A throwaway PostgreSQL server for the multi-worker tests, from the Debian package.

``start_server()`` runs ``initdb`` and ``pg_ctl start`` from ``postgresql`` (found on PATH
or in /usr/lib/postgresql/*/bin) on a free localhost port with trust authentication, as
the ``postgres`` user when the tests run as root (the server refuses to run as root). It
returns a ``Server`` with the URL of a fresh database; ``stop()`` shuts it down.

Without the package, or without the ``psycopg`` driver, the caller skips, unless the
environment sets ``PFNKIT_REQUIRE_POSTGRES=1`` (CI does): then it fails and says what to
install.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """PostgreSQL (or its Python driver) is not installed here."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise Unavailable(
        f"no '{name}': install the server (Debian: apt-get install postgresql) and run again"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    root: Path
    port: int
    user_cmd: list[str]
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/pfnkit_test"

    def stop(self) -> None:
        subprocess.run(
            [*self.user_cmd, self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> Server:
    """Start a server in a new directory under the system's temporary folder (not pytest's
    tmp_path: the postgres user cannot enter root's private pytest folders)."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's driver for postgresql:// URLs)
    except ImportError:
        raise Unavailable("no psycopg driver: pip install 'psycopg[binary]'") from None
    initdb, pg_ctl, createdb = _bin("initdb"), _bin("pg_ctl"), _bin("createdb")
    user_cmd: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            raise Unavailable("running as root without runuser to start the server as postgres")
        user_cmd = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="pfnkit-pg-"))
    if user_cmd:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
    data, log = root / "data", root / "server.log"

    def run(*cmd: str) -> None:
        r = subprocess.run([*user_cmd, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr or r.stdout}\n{tail}")

    run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    port = _free_port()
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
        "-c fsync=off -c max_connections=200"
    )
    run(pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
    server = Server(root, port, user_cmd, pg_ctl)
    run(createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "pfnkit_test")
    return server
