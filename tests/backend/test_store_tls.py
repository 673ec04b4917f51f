"""The PostgreSQL store insists on TLS with a checked certificate for a server on another machine.

Issue 19, medium finding 2: libpq's default (``sslmode=prefer``) sent the
user, the database and the password in clear to a server that declined
TLS. Here a real PostgreSQL with TLS and client certificates
(:class:`postgres.Postgres` with ``tls=``), a fake server that declines TLS
and records what it is sent, and the rule for what counts as this machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest

from harness.broker import Pki
from harness.docs import docs_snippet
from harness.ingest_kit import REPO, SimulatedSite
from kiosk.backend.config import parse_ingest_config
from kiosk.backend.pgurl import check_store_url, is_local
from kiosk.backend.store import Incoming, open_store
from kiosk.errors import ConfigError, StoreUnavailable
from harness.postgres import TLS_PASSWORD_USER, Postgres, pg_program

#: The first 8 bytes libpq sends when it asks for TLS (length 8, code 80877103).
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PASSWORD = "hunter2-not-in-logs"
_PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
           "PGPASSFILE", "PGPASSWORD")


@pytest.fixture(autouse=True)
def _no_libpq_environment(monkeypatch):
    for name in _PG_ENV:
        monkeypatch.delenv(name, raising=False)


# -- a fake server that declines TLS --------------------------------------------


class DecliningServer:
    """Answers a TLS request with 'N' (as a server without TLS does), asks for a clear-text password, records all.

    ``received`` holds, per connection, every byte the client sent.
    """

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="declining-pg", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = bytearray()
                self.received.append(data)
                try:
                    self._one(conn, data)
                except OSError:
                    pass
                self.received[-1] = bytes(data)

    @staticmethod
    def _one(conn: socket.socket, data: bytearray) -> None:
        def read(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = conn.recv(n - len(out))
                if not chunk:
                    raise ConnectionError("closed")
                out += chunk
            data.extend(out)
            return out

        length, code = struct.unpack("!ii", read(8))
        if length == 8 and code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: "no"
            conn.sendall(b"N")
            length, code = struct.unpack("!ii", read(8))
        read(length - 8)  # the rest of the StartupMessage: user, database
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        if read(1) == b"p":
            (plen,) = struct.unpack("!i", read(4))
            read(plen - 4)

    def close(self) -> None:
        self._done.set()
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def declining_server():
    server = DecliningServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pg-pki"), "Kiosk Test DB CA", server_names=("db.test", "db.example.org"))


@pytest.fixture(scope="module")
def tls_postgres(pki):
    """A PostgreSQL with ssl=on: TCP only with TLS, the user by client certificate (or password for kiosk_ingest)."""
    if pg_program("initdb") is None:
        pytest.fail("PostgreSQL is not installed (scripts/bootstrap installs it)")
    pg = Postgres(tls=pki).start()
    pg.sql("CREATE ROLE kiosk LOGIN")
    pg.sql(f"CREATE ROLE {TLS_PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
    yield pg
    pg.close()


def _event(seq: int) -> Incoming:
    return Incoming({"event_id": f"0190-tls-{seq}", "seq": seq, "site": "elm-court", "device": "door-1",
                     "type": "checkin", "resident_id": "R-0042", "time": time.time() - 5, "v": 1}, time.time())


def _database(pg: Postgres, owner: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.create_database(name, owner=owner)
    return name


# -- a real PostgreSQL over TLS -------------------------------------------------


def test_the_store_speaks_tls_to_a_server_by_its_name_with_a_client_certificate(tls_postgres, pki):
    db = _database(tls_postgres, "kiosk")
    cert, key = pki.client("kiosk")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    url = tls_postgres.tls_url(db, "kiosk", "db.test", sslmode="verify-full", sslrootcert=pki.ca_file,
                               sslcert=cert, sslkey=key)
    with open_store(url) as store:
        assert store.store_batch([_event(1), _event(2)]).stored == 2
    with open_store(url) as store:
        assert [e["event_id"] for e in store.events()] == ["0190-tls-1", "0190-tls-2"]
    with psycopg.connect(url) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() \
            == (True, "/CN=kiosk")


def test_a_wrong_ca_a_wrong_name_and_a_missing_client_certificate_are_refused(tls_postgres, pki, tmp_path,
                                                                              monkeypatch):
    db = _database(tls_postgres, "kiosk")
    cert, key = pki.client("kiosk")
    other = Pki(tmp_path / "other", "Someone Else's CA", server_names=("db.test",))

    def url(**params):
        return tls_postgres.tls_url(db, "kiosk", params.pop("host", "db.test"), sslmode="verify-full", **params)

    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        open_store(url(sslrootcert=other.ca_file, sslcert=cert, sslkey=key))
    with pytest.raises(StoreUnavailable, match="does not match host name"):
        open_store(url(host="elsewhere.test", sslrootcert=pki.ca_file, sslcert=cert, sslkey=key))
    # No client certificate (and none in libpq's default place either).
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StoreUnavailable, match="requires a valid client certificate"):
        open_store(url(sslrootcert=pki.ca_file))
    # A certificate for another user does not let one in as kiosk.
    cert2, key2 = pki.client("someone-else")
    with pytest.raises(StoreUnavailable, match="certificate authentication failed"):
        open_store(url(sslrootcert=pki.ca_file, sslcert=cert2, sslkey=key2))
    # And without TLS (allowed by our check: 127.0.0.1 is this machine) the server itself says no.
    with pytest.raises(StoreUnavailable, match="no encryption"):
        open_store(f"postgresql://kiosk@127.0.0.1:{tls_postgres.port}/{db}?sslmode=disable")


def test_the_documented_tls_url_connects_as_printed(tls_postgres, pki, tmp_path, monkeypatch):
    """docs/backend.md's [store] url, verbatim but for where the CA file is.

    libpq's own environment says where db.example.org is (127.0.0.1, the
    server's port) and where the password is (``$PGPASSFILE``).
    """
    snippet = docs_snippet("backend-store-tls")
    assert "sslmode=verify-full&sslrootcert=/etc/kiosk/db-ca.pem" in snippet
    # The page's minimal config uses the same URL.
    assert parse_ingest_config(docs_snippet("backend-ingest-toml")).store.url == \
        parse_ingest_config(snippet).store.url
    shutil.copy(pki.ca_file, tmp_path / "db-ca.pem")
    cfg = parse_ingest_config(snippet.replace("/etc/kiosk/", f"{tmp_path}/"), "docs/backend.md")
    tls_postgres.create_database("kiosk", owner=TLS_PASSWORD_USER)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"db.example.org:{tls_postgres.port}:kiosk:{TLS_PASSWORD_USER}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    # db.example.org is at 127.0.0.1 here; the certificate is checked against the name.
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(tls_postgres.port))
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with open_store(cfg.store_url) as store:
        assert store.store_batch([_event(1)]).stored == 1
        assert [e["event_id"] for e in store.events()] == ["0190-tls-1"]
    # Without its CA file the same URL is refused before connecting.
    (tmp_path / "db-ca.pem").unlink()
    with pytest.raises(ConfigError, match="sslrootcert=.*no such readable file"):
        open_store(cfg.store_url)


# -- a fake server that declines TLS --------------------------------------------


@pytest.mark.parametrize("params", ["", "&sslmode=prefer", "&sslmode=require",
                                    "&sslmode=verify-ca&sslrootcert={ca}", "&sslmode=verify-full"])
def test_a_remote_url_without_verify_full_and_a_ca_is_refused_before_any_byte_is_sent(declining_server, pki,
                                                                                       params):
    url = (f"postgresql://kiosk:{PASSWORD}@db.test:{declining_server.port}/kiosk?hostaddr=127.0.0.1"
           + params.format(ca=pki.ca_file))
    with pytest.raises(ConfigError) as e:
        open_store(url)
    assert "the store URL" in str(e.value) and "db.test" in str(e.value)
    assert PASSWORD not in str(e.value)
    time.sleep(0.2)
    assert declining_server.received == []  # not even a connection


def test_verify_full_gives_a_server_that_declines_tls_nothing_but_the_tls_request(declining_server, pki):
    url = (f"postgresql://kiosk:{PASSWORD}@db.test:{declining_server.port}/kiosk?hostaddr=127.0.0.1"
           f"&sslmode=verify-full&sslrootcert={pki.ca_file}")
    with pytest.raises(StoreUnavailable, match="server does not support SSL"):
        open_store(url)
    assert declining_server.received == [SSL_REQUEST]  # no StartupMessage: no user, database or password


def test_libpq_s_default_hands_a_server_that_declines_tls_the_user_the_database_and_the_password(declining_server):
    """The attack the check guards against, shown with psycopg directly (the store no longer allows it)."""
    url = f"postgresql://kiosk:{PASSWORD}@db.test:{declining_server.port}/kiosk_events?hostaddr=127.0.0.1"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, sslmode="prefer", connect_timeout=5)
    sent = b"".join(declining_server.received)
    assert sent.startswith(SSL_REQUEST)
    assert b"user\x00kiosk\x00" in sent and b"database\x00kiosk_events\x00" in sent
    assert PASSWORD.encode() in sent


# -- the rule -------------------------------------------------------------------


@pytest.mark.parametrize("host, hostaddr, local", [
    ("", "", True),  # libpq's Unix socket folder
    ("/run/postgresql", "", True),
    ("@kiosk-abstract", "", True),
    ("localhost", "", True),
    ("LOCALHOST", "", True),
    ("127.0.0.1", "", True),
    ("127.45.6.7", "", True),
    ("::1", "", True),
    ("", "127.0.0.1", True),
    ("localhost", "127.0.0.1", True),
    ("localhost", "10.0.0.5", False),  # the address decides where the bytes go
    ("db.test", "127.0.0.1", False),  # the name decides what is verified
    ("db.example.org", "", False),
    ("10.0.0.5", "", False),
    ("::ffff:127.0.0.1", "", False),
    ("localhost.example.org", "", False),
    ("", "192.0.2.1", False),
])
def test_what_counts_as_this_machine(host, hostaddr, local):
    assert is_local(host, hostaddr) is local


@pytest.mark.parametrize("url", [
    "postgresql:///kiosk",
    "postgresql://kiosk@/kiosk?host=/run/postgresql",
    "postgresql://kiosk@%2Frun%2Fpostgresql/kiosk",
    "postgresql://kiosk@localhost:5432/kiosk",
    "postgresql://kiosk@127.0.0.1:5432/kiosk?sslmode=disable",
    "postgresql://kiosk@[::1]:5432/kiosk",
    "postgresql://kiosk@localhost,127.0.0.2/kiosk",
    "postgresql://kiosk@db.test/kiosk?sslmode=verify-full&sslrootcert=system",
])
def test_local_and_verified_urls_pass(url):
    check_store_url(url)


@pytest.mark.parametrize("url, named", [
    ("postgresql://kiosk:{pw}@db.example.org/kiosk", "db.example.org"),
    ("postgresql://kiosk:{pw}@db.example.org/kiosk?sslmode=require&sslrootcert={ca}", "db.example.org"),
    ("postgresql://kiosk:{pw}@localhost,db.example.org/kiosk", "db.example.org"),
    ("postgresql://kiosk:{pw}@localhost/kiosk?hostaddr=10.0.0.5", "localhost"),
    ("postgresql://kiosk:{pw}@db.test/kiosk?hostaddr=127.0.0.1", "db.test"),
    ("postgresql://kiosk:{pw}@db.test/kiosk?sslmode=verify-full", "sslrootcert=FILE"),
    ("postgresql://kiosk:{pw}@db.test/kiosk?sslmode=verify-full&sslrootcert={ca}.missing", "no such readable file"),
    ("postgresql://kiosk@db.test/kiosk?password={pw}", "db.test"),
    ("postgresql://kiosk@db.test/kiosk?service=kiosk&password={pw}", "service"),
])
def test_remote_urls_without_verify_full_and_a_ca_are_refused_without_the_password(url, named, pki):
    with pytest.raises(ConfigError) as e:
        check_store_url(url.format(pw=PASSWORD, ca=pki.ca_file), "[store] url")
    assert str(e.value).startswith("[store] url: ") and named in str(e.value)
    assert PASSWORD not in str(e.value)


def test_libpq_s_environment_counts_where_the_url_is_silent(monkeypatch, pki):
    check_store_url("postgresql://kiosk@/kiosk")
    monkeypatch.setenv("PGHOST", "db.example.org")
    with pytest.raises(ConfigError, match="db.example.org"):
        check_store_url("postgresql://kiosk@/kiosk")
    check_store_url("postgresql://kiosk@localhost/kiosk")  # the URL's host wins over $PGHOST
    monkeypatch.setenv("PGHOST", "/run/postgresql")
    check_store_url("postgresql://kiosk@/kiosk")
    monkeypatch.setenv("PGHOSTADDR", "192.0.2.7")
    with pytest.raises(ConfigError, match="not on this machine"):
        check_store_url("postgresql://kiosk@localhost/kiosk")
    check_store_url("postgresql://kiosk@localhost/kiosk?hostaddr=127.0.0.1")
    monkeypatch.delenv("PGHOSTADDR")
    # $PGSSLMODE and $PGSSLROOTCERT do not make up for a URL that does not say it.
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(pki.ca_file))
    with pytest.raises(ConfigError, match="sslmode=verify-full"):
        check_store_url("postgresql://kiosk@db.example.org/kiosk")
    monkeypatch.setenv("PGSERVICE", "kiosk")
    with pytest.raises(ConfigError, match="service"):
        check_store_url("postgresql://kiosk@localhost/kiosk")


def test_validate_config_reports_a_remote_store_without_tls(tmp_path, broker, pki):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)

    def run(url):
        cfg = fleet.ingest_config(url)
        return subprocess.run([sys.executable, "-m", "kiosk.backend.ingest", "--config", str(cfg), "--validate-config"],
                              capture_output=True, text=True, timeout=60,
                              env={**{k: v for k, v in os.environ.items() if k not in _PG_ENV},
                                   "PYTHONPATH": str(REPO)})

    r = run(f"postgresql://kiosk_ingest:{PASSWORD}@db.example.org/kiosk")
    assert r.returncode == 78, r.stderr
    assert "[store] url: the PostgreSQL server db.example.org is not on this machine" in r.stderr
    assert PASSWORD not in r.stderr + r.stdout
    # With TLS and a CA file it is good; nothing connects to check it.
    r = run(f"postgresql://kiosk_ingest@db.example.org/kiosk?sslmode=verify-full&sslrootcert={pki.ca_file}")
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
