"""The back end's event store: an SQLite file by default, PostgreSQL by URL.

:func:`open_store` takes ``sqlite:///PATH`` (or a plain path) or
``postgresql://USER@HOST:PORT/DB`` and returns a :class:`Store` with the
schema of :mod:`kiosk.backend.schema` migrated. Everything is plain SQL in
the subset both databases speak; the dialects (:mod:`.dialects`) only
connect, lock and turn ``?`` into psycopg's ``%s``.

Storing is idempotent on (site, device, event id): :meth:`Store.store_batch`
writes a batch of verified events and refusals in one transaction and says
which events were already there. A lost connection (PostgreSQL restarted,
the network gone) raises :class:`~kiosk.errors.StoreUnavailable`; the next
call connects again.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uuid6

from ..errors import ConfigError, StorageError
from ..sync.events.format import printable
from . import proposals
from .dialects import Dialect, Postgres, Sqlite
from .schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

#: Names in ``store_meta``: the key for the erased residents' hashes, and the cutoff of the latest purge.
_ERASURE_KEY = "erasure_hmac"
_PURGED_BEFORE = "purged_before"

#: Columns of ``events`` as the reports read them, in this order.
EVENT_COLUMNS = ("site", "device", "event_id", "seq", "type", "outcome", "method", "resident_id",
                 "event_time", "received_at", "stored_at", "flags")


@dataclass(frozen=True)
class Incoming:
    """A verified event to store, with when it was received and what is odd about it."""

    claims: dict[str, Any]
    received_at: float
    topic: str = ""
    payload_bytes: int = 0
    payload_sha256: str = ""


@dataclass(frozen=True)
class Refusal:
    """A message refused: never its plaintext, only its size and hash."""

    topic: str
    reason: str
    detail: str
    received_at: float
    payload_bytes: int = 0
    payload_sha256: str = ""


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    flagged: int = 0
    refused: int = 0
    erased: int = 0
    past_retention: int = 0
    #: Why the proposals of stored enroll_proposed events were not filed (each a refusal row too).
    proposals_refused: list[str] = field(default_factory=list)


#: ``flag(claims, received_at, last_seq)`` -> flags (see kiosk.backend.freshness).
Flagger = Callable[[dict[str, Any], float, "int | None"], tuple[str, ...]]


def _no_flags(claims, received_at, last_seq) -> tuple[str, ...]:
    return ()


def _scheme(text: str) -> str:
    return urlsplit(text).scheme if "://" in text else ""


def is_postgres_url(url: str | Path) -> bool:
    return _scheme(str(url)) in ("postgresql", "postgres")


def open_store(url: str | Path, *, migrate: bool = True) -> "Store":
    """A store for ``url``: ``sqlite:///PATH``, a plain path, or ``postgresql://…``."""
    text = str(url)
    scheme = _scheme(text)
    if is_postgres_url(text):
        store = Store(Postgres(text))
    elif scheme in ("", "sqlite"):
        if scheme and not text.startswith("sqlite:///"):
            raise ConfigError(f"store URL {text!r}: write sqlite:///PATH (three slashes, then the path)")
        store = Store(Sqlite(Path(text[len("sqlite:///"):] if scheme else text)))
    else:
        raise ConfigError(f"store URL {text!r}: not sqlite:///PATH or postgresql://USER@HOST/DB")
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()  # retried by the caller: no connection left behind
            raise
    return store


class Store:
    """Events, refusals and erasures in SQLite or PostgreSQL (see the module docstring)."""

    def __init__(self, dialect: "Dialect"):
        self._d = dialect
        self._lock = threading.RLock()
        self._erasure_key: bytes | None = None

    @property
    def kind(self) -> str:
        return self._d.kind

    def describe(self) -> str:
        """Where the store is, without a password."""
        return self._d.describe()

    def close(self) -> None:
        with self._lock:
            self._d.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        with self._lock, self._d.transaction() as cur:
            self._d.lock_schema(cur)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur.execute("SELECT max(version) FROM schema_version")
            have = cur.fetchone()[0] or 0
            if have > SCHEMA_VERSION:
                raise StorageError(
                    f"the store {self.describe()} has schema version {have}, newer than this program's "
                    f"{SCHEMA_VERSION}: upgrade the kiosk package"
                )
            for m in MIGRATIONS:
                if m.version <= have:
                    continue
                for stmt in m.statements:
                    cur.execute(stmt)
                cur.execute(self._d.q("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"),
                            [m.version, m.name, time.time()])
                log.info("store %s migrated to schema version %d (%s)", self.describe(), m.version, m.name)
                have = m.version
            cur.execute(self._d.q("SELECT value FROM store_meta WHERE name = ?"), [_ERASURE_KEY])
            row = cur.fetchone()
            if row is None:
                cur.execute(self._d.q("INSERT INTO store_meta (name, value) VALUES (?, ?)"),
                            [_ERASURE_KEY, secrets.token_hex(32)])
                cur.execute(self._d.q("SELECT value FROM store_meta WHERE name = ?"), [_ERASURE_KEY])
                row = cur.fetchone()
            self._erasure_key = bytes.fromhex(row[0])
        return have

    def resident_hash(self, resident_id: str) -> str:
        """The keyed hash an erasure keeps of a resident id (HMAC-SHA-256 with the store's own key)."""
        if self._erasure_key is None:
            with self._lock, self._d.transaction() as cur:
                cur.execute(self._d.q("SELECT value FROM store_meta WHERE name = ?"), [_ERASURE_KEY])
                row = cur.fetchone()
            if row is None:
                raise StorageError(f"the store {self.describe()} has no erasure key: migrate it first")
            self._erasure_key = bytes.fromhex(row[0])
        return hmac.new(self._erasure_key, resident_id.encode("utf-8", "backslashreplace"), "sha256").hexdigest()

    def transaction(self):
        """One transaction for callers with tables of their own (the console): ``with store.transaction() as cur``.

        Write SQL with ``?`` placeholders through :meth:`q`.
        """
        return _Locked(self._lock, self._d.transaction())

    def q(self, sql: str) -> str:
        """``sql`` with ``?`` placeholders as this store's driver wants them."""
        return self._d.q(sql)

    def schema_version(self) -> int:
        with self._lock, self._d.transaction() as cur:
            cur.execute("SELECT max(version) FROM schema_version")
            return cur.fetchone()[0] or 0

    # -- writing --------------------------------------------------------------

    def store_batch(self, events: Sequence[Incoming], refusals: Sequence[Refusal] = (),
                    *, flag: Flagger = _no_flags, retention_s: float | None = None,
                    max_clock_ahead_s: float | None = None, now: float | None = None) -> BatchResult:
        """Store verified events and refusals in one transaction.

        An event already stored (same site, device and event id: a redelivery
        or a replay) is not stored again; it is recorded as a refusal with
        reason ``duplicate``. So is one that was erased (``erased``: its key
        has a tombstone, or it names an erased resident and is older than the
        erasure) and, given ``retention_s``, one older than the retention
        period (``past_retention``: what a purge deleted stays deleted).
        ``flag`` marks what is odd about an event, given the highest sequence
        number stored for its door. Given ``max_clock_ahead_s``, an erased
        resident's event whose time is that much later than its receipt is
        refused as erased too: its door's clock is wrong, so its time cannot
        tell whether it came before the erasure.
        """
        result = BatchResult()
        q = self._d.q
        now = time.time() if now is None else now
        with self._lock, self._d.transaction() as cur:
            events, gone = self._refuse_deleted(cur, events, retention_s, now, max_clock_ahead_s)
            # Doors in a fixed order: two processes never wait on each other in a circle.
            doors = sorted({(e.claims["site"], e.claims["device"]) for e in events})
            last: dict[tuple[str, str], list] = {}
            for site, device in doors:
                cur.execute(q("SELECT last_seq, last_event_time, last_received_at FROM devices"
                              " WHERE site = ? AND device = ?" + self._d.for_update), [site, device])
                row = cur.fetchone()
                last[(site, device)] = list(row) if row else None
            stored_flags: list[tuple[Incoming, str | None]] = []
            for ev in sorted(events, key=lambda e: (e.claims["site"], e.claims["device"], e.claims["seq"])):
                c = ev.claims
                door = (c["site"], c["device"])
                seen = last[door]
                flags = flag(c, ev.received_at, seen[0] if seen else None)
                stored_flags.append((ev, ",".join(flags) or None))
            inserted = self._d.insert_events(cur, [_event_row(ev, flags, time.time()) for ev, flags in stored_flags])
            dup_refusals = []
            for (ev, flags), new in zip(stored_flags, inserted):
                c = ev.claims
                door = (c["site"], c["device"])
                if not new:
                    result.duplicates += 1
                    dup_refusals.append(Refusal(
                        topic=ev.topic or f"{c['site']}/{c['device']}", reason="duplicate",
                        detail=f"event {c['event_id']} (seq {c['seq']}) is already stored: a redelivery or a replay",
                        received_at=ev.received_at, payload_bytes=ev.payload_bytes, payload_sha256=ev.payload_sha256,
                    ))
                    continue
                result.stored += 1
                if flags:
                    result.flagged += 1
                seen = last[door]
                if seen is None:
                    last[door] = [c["seq"], c["time"], ev.received_at]
                else:
                    seen[0] = max(seen[0], c["seq"])
                    seen[1] = max(seen[1], c["time"])
                    seen[2] = max(seen[2], ev.received_at)
            for (site, device), seen in last.items():
                if seen is None:
                    continue
                cur.execute(
                    q("INSERT INTO devices (site, device, last_seq, last_event_time, last_received_at)"
                      " VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, device) DO UPDATE SET"
                      f" last_seq = {self._d.greatest}(devices.last_seq, excluded.last_seq),"
                      f" last_event_time = {self._d.greatest}(devices.last_event_time, excluded.last_event_time),"
                      f" last_received_at = {self._d.greatest}(devices.last_received_at, excluded.last_received_at)"),
                    [site, device, *seen],
                )
            used = [Refusal(topic=ev.topic or f"{ev.claims['site']}/{ev.claims['device']}", reason=reason,
                            detail=detail, received_at=ev.received_at, payload_bytes=ev.payload_bytes,
                            payload_sha256=ev.payload_sha256)
                    for ev, reason, detail in proposals.file_proposals(
                        self, cur, [ev for (ev, _), new in zip(stored_flags, inserted) if new])]
            all_refusals = list(refusals) + gone + dup_refusals + used
            if all_refusals:
                self._d.executemany(
                    cur,
                    "INSERT INTO refused (id, received_at, topic, reason, detail, payload_bytes, payload_sha256)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [[str(uuid6.uuid7()), r.received_at, printable(r.topic, 200), printable(r.reason, 40),
                      printable(r.detail), r.payload_bytes, r.payload_sha256] for r in all_refusals],
                )
            result.refused = len(refusals)
            result.erased = sum(1 for r in gone if r.reason == "erased")
            result.past_retention = len(gone) - result.erased
            result.proposals_refused = [r.reason for r in used]
        return result

    def _refuse_deleted(self, cur, events: Sequence[Incoming], retention_s: float | None, now: float,
                        max_clock_ahead_s: float | None = None) -> tuple[list[Incoming], list[Refusal]]:
        """Split off the events that were deleted before (erased, or past retention): (to store, refusals)."""
        q = self._d.q
        keep, gone = [], []
        cur.execute(q("SELECT value FROM store_meta WHERE name = ?"), [_PURGED_BEFORE])
        row = cur.fetchone()
        cutoffs = [float(row[0])] if row else []
        if retention_s is not None:
            cutoffs.append(now - retention_s)
        cutoff = max(cutoffs) if cutoffs else None
        by_door: dict[tuple[str, str], list[str]] = {}
        hashes: dict[str, str] = {}
        for ev in events:
            c = ev.claims
            by_door.setdefault((c["site"], c["device"]), []).append(c["event_id"])
            rid = c.get("resident_id")
            if isinstance(rid, str) and rid not in hashes:
                hashes[rid] = self.resident_hash(rid)
        tombstoned: set[tuple[str, str, str]] = set()
        for (site, device), ids in by_door.items():
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                cur.execute(q("SELECT event_id FROM tombstones WHERE site = ? AND device = ? AND event_id IN"
                              f" ({','.join('?' * len(part))})"), [site, device, *part])
                tombstoned.update((site, device, r[0]) for r in cur.fetchall())
        erased_at: dict[str, float] = {}
        wanted = sorted(set(hashes.values()))
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            cur.execute(q(f"SELECT resident_hash, erased_at FROM erased_residents WHERE resident_hash IN"
                          f" ({','.join('?' * len(part))})"), part)
            erased_at.update((h, at) for h, at in cur.fetchall())
        for ev in events:
            c = ev.claims
            rid = c.get("resident_id")
            when = erased_at.get(hashes.get(rid, "")) if isinstance(rid, str) else None
            ahead = max_clock_ahead_s is not None and c["time"] - ev.received_at > max_clock_ahead_s
            if (c["site"], c["device"], c["event_id"]) in tombstoned or (
                    when is not None and (c["time"] <= when or ahead)):
                reason, detail = "erased", (f"event {c['event_id']} (seq {c['seq']}) belongs to an erasure: "
                                            "a redelivery, a late event from an offline door, or a replay")
            elif cutoff is not None and c["time"] < cutoff:
                reason, detail = "past_retention", (f"event {c['event_id']} (seq {c['seq']}) is older than the "
                                                    "retention period")
            else:
                keep.append(ev)
                continue
            gone.append(Refusal(topic=ev.topic or f"{c['site']}/{c['device']}", reason=reason, detail=detail,
                                received_at=ev.received_at, payload_bytes=ev.payload_bytes,
                                payload_sha256=ev.payload_sha256))
        return keep, gone

    def purge(self, older_than: float, *, now: float | None = None) -> tuple[int, int]:
        """Delete events and refusals older than ``older_than`` seconds; (events, refusals).

        An event goes by its event time, or by when it was received if that is older: a door whose clock ran
        ahead does not keep its events past retention.

        Tombstones past the same age go too: the cutoff is remembered and any
        event older than it is refused (``past_retention``), so they are no
        longer needed to keep it out.
        """
        cutoff = (time.time() if now is None else now) - older_than
        q = self._d.q
        with self._lock, self._d.transaction() as cur:
            cur.execute(q("DELETE FROM events WHERE event_time < ? OR received_at < ?"), [cutoff, cutoff])
            events = cur.rowcount
            cur.execute(q("DELETE FROM refused WHERE received_at < ?"), [cutoff])
            refused = cur.rowcount
            cur.execute(q("DELETE FROM tombstones WHERE event_time < ?"), [cutoff])
            cur.execute(q("DELETE FROM erased_residents WHERE erased_at < ?"), [cutoff])
            proposals.purge(cur, q, cutoff)
            # Remembered, so that a replay of what was purged stays out even where the
            # ingest's own retention is longer than this purge's.
            cur.execute(q("SELECT value FROM store_meta WHERE name = ?"), [_PURGED_BEFORE])
            row = cur.fetchone()
            if row is None:
                cur.execute(q("INSERT INTO store_meta (name, value) VALUES (?, ?)"), [_PURGED_BEFORE, repr(cutoff)])
            elif float(row[0]) < cutoff:
                cur.execute(q("UPDATE store_meta SET value = ? WHERE name = ?"), [repr(cutoff), _PURGED_BEFORE])
        if events or refused:
            with self._lock:
                self._d.reclaim()
        return events, refused

    def erase_resident(self, resident_id: str, *, now: float | None = None) -> int:
        """Delete every stored event of one resident, and their proposals; returns how many events.

        What stays: a tombstone per erased event (its key), and the resident as a
        keyed hash with the time of the erasure, so that a redelivery, a replay,
        or a check-in an offline door still holds is refused, not stored again.
        The erasure is logged without whose.
        """
        now = time.time() if now is None else now
        digest = self.resident_hash(resident_id)
        q = self._d.q
        with self._lock, self._d.transaction() as cur:
            cur.execute(q("INSERT INTO tombstones (site, device, event_id, event_time)"
                          " SELECT site, device, event_id, event_time FROM events WHERE resident_id = ?"
                          " ON CONFLICT (site, device, event_id) DO NOTHING"), [resident_id])
            cur.execute(q("DELETE FROM events WHERE resident_id = ?"), [resident_id])
            n = cur.rowcount
            proposals.erase(cur, q, digest)  # their enrollments at the door, sealed descriptors and all
            cur.execute(q("INSERT INTO erased_residents (resident_hash, erased_at) VALUES (?, ?)"
                          f" ON CONFLICT (resident_hash) DO UPDATE SET erased_at ="
                          f" {self._d.greatest}(erased_residents.erased_at, excluded.erased_at)"), [digest, now])
            cur.execute(q("INSERT INTO erasures (id, erased_at, events) VALUES (?, ?, ?)"),
                        [str(uuid6.uuid7()), now, n])
        with self._lock:
            self._d.reclaim(rebuild=True)
        return n

    # -- reading --------------------------------------------------------------

    def events(self, *, since: float | None = None, until: float | None = None, site: str | None = None,
               device: str | None = None, resident_id: str | None = None,
               types: Iterable[str] | None = None, claims: bool = False) -> Iterator[dict[str, Any]]:
        """Stored events in event-time order, as dicts of :data:`EVENT_COLUMNS` (and ``claims``, parsed, if asked)."""
        columns = (*EVENT_COLUMNS, "claims") if claims else EVENT_COLUMNS
        for row in self.event_rows(columns, since=since, until=until, site=site, device=device,
                                   resident_id=resident_id, types=types):
            out = dict(zip(columns, row))
            if claims:
                out["claims"] = json.loads(out["claims"])
            yield out

    def event_rows(self, columns: Sequence[str], *, since: float | None = None, until: float | None = None,
                   site: str | None = None, device: str | None = None, resident_id: str | None = None,
                   types: Iterable[str] | None = None) -> list[tuple]:
        """Stored events in event-time order, as tuples of ``columns`` (of :data:`EVENT_COLUMNS`, or ``claims``,
        unparsed): for reports over many events, which need a few columns and no dict per row."""
        bad = [c for c in columns if c not in EVENT_COLUMNS and c != "claims"]
        if bad:
            raise ValueError(f"not columns of events: {bad}")
        where, args = [], []
        for col, op, val in (("event_time", ">=", since), ("event_time", "<", until), ("site", "=", site),
                             ("device", "=", device), ("resident_id", "=", resident_id)):
            if val is not None:
                where.append(f"{col} {op} ?")
                args.append(val)
        if types is not None:
            types = list(types)
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        sql = f"SELECT {', '.join(columns)} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_time, site, device, seq"
        with self._lock, self._d.transaction() as cur:
            cur.execute(self._d.q(sql), args)
            return cur.fetchall()

    def attendance(self, spans: Sequence[tuple[float, float, float]], types: Sequence[str], *,
                   site: str | None = None, limit: int | None = None,
                   offset: int = 0) -> tuple[list[tuple], int]:
        """Events of ``types`` with a resident, counted in SQL per local day and resident over ``spans``
        ((start, end, UTC offset) each, in order, as :meth:`kiosk.backend.report.LocalClock.spans` cuts a
        period), ordered by day and resident (by code point), ``limit`` rows from ``offset``:
        ([(day number since 1970-01-01, resident, first local time, last local time, count, the doors
        sorted and joined by a space)], how many rows in all). Local time is Unix time plus the offset."""
        if not spans:
            return [], 0
        local = "event_time + CASE " + " ".join("WHEN event_time < ? THEN ?" for _ in spans[:-1]) + " ELSE ? END" \
            if len(spans) > 1 else "event_time + ?"
        args: list = [v for _, end, off in spans[:-1] for v in (end, off)] + [spans[-1][2]]
        where = ["event_time >= ?", "event_time < ?", "resident_id IS NOT NULL", "resident_id <> ''",
                 f"type IN ({','.join('?' * len(types))})"]
        args += [spans[0][0], spans[-1][1], *types]
        if site is not None:
            where.append("site = ?")
            args.append(site)
        d = self._d
        inner = (f"SELECT {local} AS l, resident_id{d.bytewise} AS resident, (site || '/' || device){d.bytewise}"
                 f" AS door FROM events WHERE {' AND '.join(where)}")
        sql = (f"SELECT {d.whole_days.format('l')} AS d, resident, min(l), max(l), count(*), {d.door_list},"
               f" count(*) OVER () FROM ({inner}) AS x GROUP BY 1, 2 ORDER BY 1, 2")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._lock, d.transaction() as cur:
            cur.execute(d.q(sql), args)
            rows = cur.fetchall()
            if not rows and offset:
                cur.execute(d.q(f"SELECT count(*) FROM ({sql.rsplit(' LIMIT', 1)[0]}) AS y"), args[:-2])
                return [], int(cur.fetchone()[0])
        total = int(rows[0][6]) if rows else 0
        if d.doors_sorted:
            return [r[:6] for r in rows], total
        return [(*r[:5], " ".join(sorted(r[5][:-1].split("\x1f,")))) for r in rows], total

    def event_span(self, types: Sequence[str]) -> tuple[float, float] | None:
        """(first, last) event time of the stored events of ``types``, or None when there are none."""
        with self._lock, self._d.transaction() as cur:
            cur.execute(self._d.q(f"SELECT min(event_time), max(event_time) FROM events"
                                  f" WHERE type IN ({','.join('?' * len(types))})"), list(types))
            row = cur.fetchone()
        return None if row is None or row[0] is None else (float(row[0]), float(row[1]))

    def events_state(self, *, since: float | None = None, until: float | None = None) -> tuple[int, float]:
        """(how many events, the latest stored_at) in an event-time range: it changes whenever the range's
        events do, since events are only ever inserted (stored_at now) or deleted, so a report of the
        range can be kept until it does."""
        where, args = [], []
        for op, val in ((">=", since), ("<", until)):
            if val is not None:
                where.append(f"event_time {op} ?")
                args.append(val)
        sql = "SELECT count(*), max(stored_at) FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock, self._d.transaction() as cur:
            cur.execute(self._d.q(sql), args)
            n, latest = cur.fetchone()
        return int(n), float(latest or 0.0)

    def claims_of(self, site: str, device: str, event_id: str) -> dict[str, Any] | None:
        with self._lock, self._d.transaction() as cur:
            cur.execute(self._d.q("SELECT claims FROM events WHERE site = ? AND device = ? AND event_id = ?"),
                        [site, device, event_id])
            row = cur.fetchone()
        return json.loads(row[0]) if row else None

    def refusals(self, *, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        cols = ("received_at", "topic", "reason", "detail", "payload_bytes", "payload_sha256")
        where, args = [], []
        if since is not None:
            where.append("received_at >= ?")
            args.append(since)
        if until is not None:
            where.append("received_at < ?")
            args.append(until)
        sql = f"SELECT {', '.join(cols)} FROM refused" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock, self._d.transaction() as cur:
            cur.execute(self._d.q(sql + " ORDER BY received_at, id"), args)
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        """Rows per table (for status lines and tests)."""
        out = {}
        with self._lock, self._d.transaction() as cur:
            for table in ("events", "devices", "refused", "erasures", "tombstones", "erased_residents"):
                cur.execute(f"SELECT count(*) FROM {table}")
                out[table] = cur.fetchone()[0]
        return out

    def event_keys(self) -> list[tuple[str, str, str]]:
        """(site, device, event_id) of every stored event."""
        with self._lock, self._d.transaction() as cur:
            cur.execute("SELECT site, device, event_id FROM events")
            return [tuple(r) for r in cur.fetchall()]


class _Locked:
    """The store's lock held around one dialect transaction."""

    def __init__(self, lock, transaction):
        self._lock, self._tx = lock, transaction

    def __enter__(self):
        self._lock.acquire()
        try:
            return self._tx.__enter__()
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *exc):
        try:
            return self._tx.__exit__(*exc)
        finally:
            self._lock.release()


def _event_row(ev: Incoming, flags: str | None, stored_at: float) -> list:
    c = dict(ev.claims)
    evidence = c.pop("evidence_jpeg", None)
    c.pop("proposal", None)  # a door's sealed proposal is filed apart (kiosk.backend.proposals)
    return [c["site"], c["device"], c["event_id"], c["seq"], c["type"], c.get("outcome"), c.get("method"),
            c.get("resident_id"), float(c["time"]), ev.received_at, stored_at, flags,
            json.dumps(c, sort_keys=True, separators=(",", ":")), evidence]
