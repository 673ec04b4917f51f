"""A real PostgreSQL for tests: a throw-away cluster on a free loopback port.

``initdb`` makes the cluster in a fresh folder (as the ``postgres`` user when
the tests run as root: PostgreSQL refuses to run as root), ``postgres``
serves it on 127.0.0.1 with trust authentication for local test users only,
and it is stopped by PID (SIGINT: PostgreSQL's fast shutdown).

Fixtures (made available by ``tests/conftest.py``):

- ``postgres_server``: one started :class:`Postgres` per test session;
- ``postgres_url``: a fresh, empty database on it for each test, as a
  ``postgresql://`` URL.

With ``tls=`` (a :class:`broker.Pki`: its CA, server certificate and key)
the server speaks TLS and TCP clients must use it: :data:`TLS_HBA` lets a
TLS client in by its certificate (the common name is the user) or, for
:data:`TLS_PASSWORD_USER`, by password, and turns away any connection
without TLS; the superuser comes in over the Unix socket (:meth:`Postgres.url`).

Nothing here needs pytest except the fixtures, so ``scripts/bench-ingest``
uses :class:`Postgres` too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

#: Debian's PostgreSQL puts its server programs here (not on PATH).
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_program(name: str) -> str | None:
    """The path of a PostgreSQL server program (initdb, postgres), newest version first."""
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


#: pg_hba.conf of a TLS server: see the module docstring.
TLS_PASSWORD_USER = "kiosk_ingest"
TLS_HBA = f"""\
local     all all                        trust
hostssl   all {TLS_PASSWORD_USER}  127.0.0.1/32 scram-sha-256
hostssl   all all            127.0.0.1/32 cert
hostnossl all all            0.0.0.0/0    reject
host      all all            ::/0         reject
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One PostgreSQL server with its own throw-away cluster; stopped by PID."""

    def __init__(self, root: Path | None = None, *, port: int | None = None, tls=None):
        self.root = Path(root or tempfile.mkdtemp(prefix="kiosk-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log_path = self.root / "postgres.log"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        # PostgreSQL will not run as root: as root, run it as "postgres".
        self._user = "postgres" if os.geteuid() == 0 else None
        self.superuser = self._user or pwd.getpwuid(os.geteuid()).pw_name
        self.tls = tls
        self._initdb()
        if tls is not None:
            self._enable_tls(tls)

    def _as_user(self) -> dict:
        if self._user is None:
            return {}
        pw = pwd.getpwnam(self._user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            pw = pwd.getpwnam(self._user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        initdb = pg_program("initdb")
        if initdb is None:
            raise RuntimeError("initdb not found: install Debian's postgresql package (scripts/bootstrap does)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for d in (self.data, self.sockets):
            d.mkdir(exist_ok=True)
            self._chown(d)
        self.log_path.touch()
        self._chown(self.log_path)
        out = subprocess.run(
            [initdb, "-D", str(self.data), "-U", self.superuser, "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-sync"],
            capture_output=True, text=True, cwd=self.root, **self._as_user(),
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}): {out.stderr.strip()}")

    def _enable_tls(self, pki) -> None:
        """ssl=on with the PKI's server certificate; clients' certificates checked against its CA."""
        for src, name in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key"), (pki.ca_file, "root.crt")):
            dst = self.data / name
            shutil.copy(src, dst)
            dst.chmod(0o600)  # PostgreSQL refuses a key others may read
            self._chown(dst)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# Added by harness/postgres.py\nssl = on\nssl_cert_file = 'server.crt'\n"
                       "ssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n")
        (self.data / "pg_hba.conf").write_text(TLS_HBA)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        if self.tls is not None:  # TCP needs TLS and a certificate: the superuser uses the socket
            return f"postgresql://{user or self.superuser}@/{database}?host={self.sockets}&port={self.port}"
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{database}"

    def tls_url(self, database: str, user: str, host_name: str, **params: str) -> str:
        """A TLS URL over TCP: ``host_name`` (in the server's certificate) at 127.0.0.1, and libpq ``params``."""
        query = "&".join(f"{k}={v}" for k, v in {"hostaddr": self.host, **params}.items())
        return f"postgresql://{user}@{host_name}:{self.port}/{database}?{query}"

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser (roles, grants)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)

    def start(self, timeout: float = 30.0) -> "Postgres":
        if self.running():
            return self
        self.proc = subprocess.Popen(
            [pg_program("postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port),
             "-k", str(self.sockets), "-c", "fsync=on", "-c", "logging_collector=off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
            cwd=self.root, **self._as_user(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                if self._ready():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"postgres did not start within {timeout}s\n{self.log_tail()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str | None = None, owner: str | None = None) -> str:
        """A new empty database (owned by ``owner``, a role that exists); returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        return self.url(name)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown by PID (SIGINT), then wait."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> "Postgres":
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


try:
    import pytest
except ImportError:  # pragma: no cover - scripts without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def postgres_server():
        """A started PostgreSQL (throw-away cluster, loopback, trust auth); stopped by PID at the end."""
        if pg_program("initdb") is None:
            pytest.fail("PostgreSQL is not installed (scripts/bootstrap installs it)")
        pg = Postgres()
        pg.start()
        yield pg
        pg.close()

    @pytest.fixture
    def postgres_url(postgres_server) -> str:
        """A fresh, empty database on ``postgres_server``, as a postgresql:// URL."""
        if not postgres_server.running():
            postgres_server.start()
        return postgres_server.create_database()
