"""How the store speaks to SQLite and to PostgreSQL: connecting, transactions, the few differences.

Everything else is the same plain SQL (:mod:`kiosk.backend.store`): a
dialect connects, opens and ends transactions (turning a lost connection
into :class:`~kiosk.errors.StoreUnavailable`), turns ``?`` into psycopg's
``%s``, and inserts a batch of events saying which were new.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, StorageError, StoreUnavailable
from .pgurl import check_store_url

log = logging.getLogger(__name__)

_INSERT_EVENT = (
    "INSERT INTO events (site, device, event_id, seq, type, outcome, method, resident_id, event_time,"
    " received_at, stored_at, flags, claims, evidence_jpeg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (site, device, event_id) DO NOTHING"
)


class Dialect:
    kind = ""
    greatest = "GREATEST"
    for_update = ""
    #: The whole days in a non-negative number of seconds (SQLite's CAST truncates; PostgreSQL's rounds).
    whole_days = "CAST(FLOOR(({}) / 86400) AS BIGINT)"
    #: Text compared byte by byte (in UTF-8, by code point: as Python's ``sorted`` orders ``str``).
    bytewise = ' COLLATE "C"'
    #: The distinct ``door`` values of a group, sorted and joined by a space (``doors_sorted``), or each
    #: followed by U+001F and joined by commas (the store sorts them).
    door_list = "string_agg(DISTINCT door, ' ' ORDER BY door)"
    doors_sorted = True

    def q(self, sql: str) -> str:
        return sql

    def transaction(self):
        raise NotImplementedError

    def lock_schema(self, cur) -> None:
        pass

    def insert_events(self, cur, rows: list[list]) -> list[bool]:
        raise NotImplementedError

    def executemany(self, cur, sql: str, rows: list[list]) -> None:
        cur.executemany(self.q(sql), rows)

    def reclaim(self, *, rebuild: bool = False) -> bool:
        """After deleting: what the deleted rows left behind is made unreadable where the database can
        (``rebuild``: every page written afresh, for an erasure). True when it was done in full."""
        return True

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Transaction:
    """``with`` block around one transaction on a connection: commit on success, roll back on error."""

    def __init__(self, begin: Callable[[], Any], commit: Callable[[], None], rollback: Callable[[], None],
                 cursor: Callable[[], Any], errors: tuple[type[BaseException], ...], on_lost: Callable[[BaseException], None]):
        self._begin, self._commit, self._rollback, self._cursor = begin, commit, rollback, cursor
        self._errors, self._on_lost = errors, on_lost

    def __enter__(self):
        try:
            self._begin()
            self.cur = self._cursor()
        except self._errors as e:
            self._on_lost(e)
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._commit()
                return False
            self._rollback()
        except self._errors as e:
            self._on_lost(e)
        if exc is not None and isinstance(exc, self._errors):
            self._on_lost(exc)
        return False


class Sqlite(Dialect):
    kind = "sqlite"
    greatest = "MAX"
    whole_days = "CAST(({}) / 86400 AS INTEGER)"
    bytewise = ""  # BINARY, the default
    door_list = "group_concat(DISTINCT door || char(31))"  # SQLite 3.40 has no ORDER BY in an aggregate
    doors_sorted = False

    def __init__(self, path: Path):
        from ..privatefile import private_database

        self.path = path
        self._conn = None
        try:
            private_database(path)  # 0600 before SQLite opens it, whatever the umask; its -wal and -shm follow
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # A stored event survives a power cut before it is acknowledged.
            self._conn.execute("PRAGMA synchronous=FULL")
            # Erased rows are overwritten, not left in free pages.
            self._conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.OperationalError as e:
            # Busy or locked (another ingest process creating or migrating it): waited for, as an outage is.
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise StoreUnavailable(f"cannot open the store {path} yet: {e}") from None
        except (sqlite3.Error, OSError) as e:
            raise StorageError(f"cannot open the store {path}: {e}") from None

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def transaction(self):
        conn = self._conn

        def lost(e):
            # Locked, busy, full or failing disk: the store's state, not the data's; retried.
            if isinstance(e, sqlite3.OperationalError):
                raise StoreUnavailable(f"store {self.path}: {e}") from None
            raise StorageError(f"store {self.path}: {e}") from None

        return _Transaction(lambda: conn.execute("BEGIN IMMEDIATE"), lambda: conn.execute("COMMIT"),
                            lambda: conn.execute("ROLLBACK") if conn.in_transaction else None,
                            conn.cursor, (sqlite3.Error,), lost)

    def insert_events(self, cur, rows):
        out = []
        for row in rows:
            cur.execute(_INSERT_EVENT, row)
            out.append(cur.rowcount == 1)
        return out

    def reclaim(self, *, rebuild: bool = False, attempts: int = 40) -> bool:
        # secure_delete zeroes a deleted row, but not the older copies SQLite leaves in the unused middle of a
        # live page when it rebalances pages while inserting (an erased resident's id was found there, about
        # one store in 60): only VACUUM, which writes every page afresh, takes those away. It holds the write
        # lock while it runs (the ingest waits, the broker keeps the messages), so it runs for an erasure, not
        # for the hourly retention purge. Then the WAL, which holds the pages as they were, is emptied.
        try:
            if rebuild:
                self._conn.execute("VACUUM")
            for _ in range(attempts):
                busy, _frames, _done = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(0.05)
        except sqlite3.Error as e:
            log.warning("store %s: deleted rows not reclaimed yet (%s); the next erasure or checkpoint will",
                        self.path, e)
            return False
        log.warning("store %s: the WAL could not be emptied (readers busy); the next checkpoint will", self.path)
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Postgres(Dialect):
    kind = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, connect_timeout: float = 10.0):
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a postgresql:// store needs psycopg 3: pip install 'kiosk[backend]'"
            ) from None
        # Before any byte is sent: TLS with a checked certificate, or this machine only.
        check_store_url(url)
        self._psycopg = psycopg
        self.url = url
        self.connect_timeout = connect_timeout
        self._conn = None
        self._connect()

    def describe(self) -> str:
        u = urlsplit(self.url)
        host = u.hostname or "localhost"
        port = f":{u.port}" if u.port else ""
        user = f"{u.username}@" if u.username else ""
        return f"postgresql://{user}{host}{port}{u.path}"

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _connect(self):
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = self._psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)))
        except self._psycopg.Error as e:
            self._conn = None
            raise StoreUnavailable(f"cannot connect to the store {self.describe()}: {_first_line(e)}") from None
        return self._conn

    def _lost(self, e: BaseException):
        pg = self._psycopg
        if (isinstance(e, (pg.OperationalError, pg.InterfaceError)) or (self._conn is not None and self._conn.closed)
                or _store_wide(getattr(e, "sqlstate", None))):
            try:
                if self._conn is not None:
                    self._conn.close()
            except pg.Error:
                pass
            self._conn = None
            raise StoreUnavailable(f"lost the store {self.describe()}: {_first_line(e)}") from None
        raise StorageError(f"store {self.describe()}: {_first_line(e)}") from None

    def transaction(self):
        conn = self._connect()
        return _Transaction(lambda: None, conn.commit, conn.rollback, conn.cursor, (self._psycopg.Error,), self._lost)

    def lock_schema(self, cur) -> None:
        # Several processes may start at once: one migrates, the others wait for it.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])

    def insert_events(self, cur, rows):
        if not rows:
            return []
        cur.executemany(self.q(_INSERT_EVENT) + " RETURNING 1", rows, returning=True)
        out = []
        while True:
            out.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        return out

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._psycopg.Error:
                pass
            self._conn = None


#: Advisory lock key held while migrating ("kiosk" in ASCII).
_MIGRATION_LOCK = 0x6B696F736B


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


#: PostgreSQL errors that are the store's state, not a row's: read-only (a standby, a full-disk guard), no
#: privilege, out of resources (disk, memory, connections), shut down by an operator, system and I/O errors.
_STORE_WIDE = ("25006", "42501")
_STORE_WIDE_CLASSES = ("53", "57", "58")


def _store_wide(sqlstate: str | None) -> bool:
    return bool(sqlstate) and (sqlstate in _STORE_WIDE or sqlstate[:2] in _STORE_WIDE_CLASSES)
