"""The check-in outbox: every decision is committed here before anything else.

The ``checkins`` table is the outbox. A row gets its per-device sequence
number (``seq``) and a UUIDv7 ``event_id`` when it is committed; the
publisher copies undelivered rows to MQTT and marks them delivered only on
the broker's PUBACK. Delivered rows are erased after the retention period.

The database has a disk budget. When it is reached, delivered rows go first;
if only undelivered rows are left, the outbox raises an alarm (``alarm``,
logged once) and follows the configured policy: drop the oldest undelivered
events (non-check-ins first, each one counted), refuse new events
(:class:`~kiosk.errors.OutboxFull`), or keep writing.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
import uuid6

from ...config import OutboxSettings
from ...db import get_meta, set_meta
from ...errors import OutboxFull
from ...match.decide import Decision, Outcome
from .format import CHECKIN_TYPES, CLAIM_FIELDS, CLAIMS_VERSION, EXTRA_CLAIMS, PROPOSAL_EVENT, check_claims

log = logging.getLogger(__name__)

# The claim set is defined in .format (one definition for the device and the receivers).
_OWN_CLAIMS = frozenset(CLAIM_FIELDS) - EXTRA_CLAIMS

_MB = 1024 * 1024
#: Undelivered rows dropped per step when the budget is reached (few: each is a loss).
_DROP_BATCH = 16


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A committed event, as stored in the outbox."""

    seq: int
    event_id: str
    type: str
    claims: dict[str, Any]
    delivered_at: float | None = None


class Outbox:
    """Commits decisions as events and hands undelivered ones to the publisher.

    Safe to use from several threads: every statement runs under one lock, so
    a commit and a publisher's acknowledgement never share a transaction.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        site: str,
        device: str,
        settings: OutboxSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.site = site
        self.device = device
        self.settings = settings or OutboxSettings()
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._listeners: list[Callable[[int], None]] = []
        self._alarm: str | None = None
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self._owns_db = False

    @classmethod
    def open(cls, path, *, site: str, device: str, settings: OutboxSettings | None = None, **kwargs) -> "Outbox":
        """An outbox on its own connection to the database at ``path`` (closed by :meth:`close`).

        Its own connection keeps the publisher's transactions apart from
        those of other stages that share the database file.
        """
        from ...db import open_database

        ob = cls(open_database(path), site=site, device=device, settings=settings, **kwargs)
        ob._owns_db = True
        return ob

    def close(self) -> None:
        """Close the connection if :meth:`open` made it; safe to call twice."""
        if self._owns_db:
            self._owns_db = False
            with self._lock:
                self.db.close()

    # -- committing ---------------------------------------------------------

    def commit(self, decision: Decision, *, evidence: bytes | None = None, **extra: Any) -> CheckIn:
        """Commit one decision durably and return the stored event.

        ``extra`` adds claims (location_state, gallery_version, model_id …);
        it may not replace the outbox's own. ``evidence`` (JPEG bytes) is kept
        only when ``evidence_crop`` is on. Raises
        :class:`~kiosk.errors.OutboxFull` when the disk budget is reached and
        the policy is "refuse".
        """
        clash = _OWN_CLAIMS.intersection(extra)
        if clash:
            raise ValueError(f"extra claims may not replace {sorted(clash)}")
        now = self._wall()
        event_id = str(uuid6.uuid7())
        claims: dict[str, Any] = {
            "event_id": event_id,
            "site": self.site,
            "device": self.device,
            "type": decision.event_type,
            "outcome": decision.outcome.value if isinstance(decision.outcome, Outcome) else str(decision.outcome),
            "resident_id": decision.resident_id,
            "distance": _num(decision.distance),
            "margin": _num(decision.margin),
            "frames": decision.frames,
            "reason": decision.reason,
            "liveness": {k: _num(v) for k, v in decision.liveness.items()} or None,
            "method": decision.method,
            "location_state": None,
            "location_distance_m": None,
            "location_accuracy_m": None,
            "location_flagged": None,
            "gallery_version": None,
            "model_id": None,
            "time": now,
            "v": CLAIMS_VERSION,
        }
        claims.update(extra)
        # Refuse what cannot be published, or what the back end would refuse, before it is stored, not after.
        text = json.dumps(claims, sort_keys=True, allow_nan=False)
        check_claims({**claims, "seq": 0})
        if evidence is not None and not self.settings.evidence_crop:
            evidence = None  # config says no image leaves the device
        with self._lock:
            self._make_room()
            with self.db.atomic():
                cur = self.db.execute(
                    "INSERT INTO checkins(event_id, type, outcome, resident_id, distance, margin, frames,"
                    " reason, created_at, claims, evidence) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        event_id,
                        claims["type"],
                        claims["outcome"],
                        decision.resident_id,
                        _num(decision.distance),
                        _num(decision.margin),
                        decision.frames,
                        decision.reason,
                        now,
                        text,
                        evidence,
                    ],
                )
                seq = cur.lastrowid
        claims["seq"] = seq
        for listener in list(self._listeners):
            listener(seq)
        return CheckIn(seq=seq, event_id=event_id, type=claims["type"], claims=claims)

    def commit_event(self, event_type: str, outcome: str, *, reason: str | None = None, **extra: Any) -> CheckIn:
        """Commit an event that is not a door decision (a change of location state …).

        It carries no resident; ``outcome`` says what happened (e.g. the new state).
        """
        if event_type in CHECKIN_TYPES or not event_type.replace("_", "").isalnum():
            raise ValueError(f"bad event type {event_type!r}")
        return self.commit(_Notice(event_type, outcome, reason), **extra)

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(seq)`` after each commit (from the committing thread)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[int], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    # -- publishing ---------------------------------------------------------

    def undelivered(self, limit: int = 100, after_seq: int = 0) -> list[CheckIn]:
        """Undelivered events in sequence order (with any evidence crop as a claim)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, event_id, type, claims, delivered_at, evidence FROM checkins"
                " WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                [after_seq, limit],
            ).fetchall()
        return [_row_to_checkin(r) for r in rows]

    def mark_delivered(self, seq: int) -> None:
        self.mark_delivered_many([seq])

    def mark_delivered_many(self, seqs: Iterable[int]) -> int:
        """Mark events delivered (the broker acknowledged them) in one transaction.

        The evidence crop is erased at once. Returns how many rows changed.
        """
        seqs = list(seqs)
        if not seqs:
            return 0
        changed = 0
        with self._lock, self.db.atomic():
            now = self._wall()
            for i in range(0, len(seqs), 500):
                part = seqs[i : i + 500]
                cur = self.db.execute(
                    "UPDATE checkins SET delivered_at = ?, evidence = NULL WHERE delivered_at IS NULL AND seq IN"
                    f" ({','.join('?' * len(part))})",
                    [now, *part],
                )
                changed += cur.rowcount
        return changed

    def last_checkins(self, since: float) -> dict[str, float]:
        """Each resident's latest check-in committed at or after ``since`` (wall seconds).

        The recogniser starts from it, so that a resident accepted just before
        a restart is a DUPLICATE just after it, as within one run.
        """
        with self._lock:
            rows = self.db.execute(
                "SELECT resident_id, max(created_at) FROM checkins WHERE type IN (?, ?) AND resident_id IS NOT NULL"
                " AND created_at >= ? GROUP BY resident_id",
                [*CHECKIN_TYPES, since],
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def last_proposals(self, kind: str, since: float) -> dict[str, float]:
        """Each resident's latest proposal of ``kind`` (its ``proposal_kind``) committed at or after ``since``:
        a door that restarts keeps to one door template per resident per interval."""
        with self._lock:
            rows = self.db.execute(
                "SELECT resident_id, max(created_at) FROM checkins WHERE type = ? AND resident_id IS NOT NULL"
                " AND created_at >= ? AND json_extract(claims, '$.proposal_kind') = ? GROUP BY resident_id",
                [PROPOSAL_EVENT, since, kind],
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    # -- housekeeping -------------------------------------------------------

    def purge_delivered(self, older_than: float | None = None) -> int:
        """Erase delivered events older than the retention period (or ``older_than`` seconds)."""
        keep = self.settings.retention_days * 86400 if older_than is None else older_than
        cutoff = self._wall() - keep
        with self._lock, self.db.atomic():
            n = self.db.execute(
                "DELETE FROM checkins WHERE delivered_at IS NOT NULL AND delivered_at <= ?", [cutoff]
            ).rowcount
        if n:
            log.info("erased %d delivered events past retention", n)
        return n

    def bytes_used(self) -> int:
        """Bytes of the database file in use (pages not on the free list)."""
        with self._lock:
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    @property
    def budget_bytes(self) -> int:
        return int(self.settings.disk_budget_mb * _MB)

    def _make_room(self) -> None:
        """Keep the database under its budget before a commit (lock held)."""
        budget = self.budget_bytes
        if self._alarm is None:
            if self.bytes_used() < budget:
                return
        elif self._erase_delivered(0.9 * budget):
            # Hysteresis: the alarm clears only with a tenth of the budget free.
            self._clear_alarm()
            return
        # Delivered events are safe at the back end: they go first.
        if self._erase_delivered(budget):
            return
        policy = self.settings.when_full
        self._raise_alarm(f"outbox disk budget of {self.settings.disk_budget_mb:g} MB reached; policy {policy}")
        if policy == "refuse":
            raise OutboxFull(self._alarm)
        if policy == "alarm_only":
            return
        dropped = 0
        while self.bytes_used() >= budget:
            with self.db.atomic():
                rows = self.db.execute(
                    "SELECT seq FROM checkins WHERE delivered_at IS NULL AND type NOT IN (?, ?) ORDER BY seq LIMIT ?",
                    [*CHECKIN_TYPES, _DROP_BATCH],
                ).fetchall()
                if not rows:
                    rows = self.db.execute(
                        "SELECT seq FROM checkins WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", [_DROP_BATCH]
                    ).fetchall()
                if not rows:
                    break
                seqs = [r[0] for r in rows]
                self.db.execute(
                    f"DELETE FROM checkins WHERE seq IN ({','.join('?' * len(seqs))})", seqs
                )
                total = int(get_meta(self.db, "outbox.dropped", "0")) + len(seqs)
                set_meta(self.db, "outbox.dropped", str(total))
                set_meta(self.db, "outbox.dropped_last_seq", str(max(seqs)))
            dropped += len(seqs)
        if dropped:
            log.error("outbox full: dropped %d undelivered events (oldest first, non-check-ins first)", dropped)

    def _erase_delivered(self, target: float) -> bool:
        """Erase delivered events, oldest first, until under ``target`` bytes; True if there."""
        while self.bytes_used() >= target:
            with self.db.atomic():
                n = self.db.execute(
                    "DELETE FROM checkins WHERE seq IN (SELECT seq FROM checkins WHERE delivered_at IS NOT NULL"
                    " ORDER BY seq LIMIT ?)",
                    [_DROP_BATCH * 64],
                ).rowcount
            if not n:
                return False
        return True

    def _clear_alarm(self) -> None:
        log.warning("outbox back under its disk budget; alarm cleared")
        self._alarm = None

    def _raise_alarm(self, message: str) -> None:
        if self._alarm != message:
            log.error("%s (%d undelivered events)", message, self.depth())
        self._alarm = message

    @property
    def alarm(self) -> str | None:
        """Why the outbox needs attention, or None."""
        return self._alarm

    def dropped(self) -> int:
        """Undelivered events dropped over the device's life because the budget was reached."""
        with self._lock:
            return int(get_meta(self.db, "outbox.dropped", "0"))

    def depth(self) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM checkins WHERE delivered_at IS NULL").fetchone()[0]

    def waiting(self, event_type: str) -> int:
        """Undelivered events of one type (the door's status: enrollment proposals not yet sent)."""
        with self._lock:
            return self.db.execute("SELECT count(*) FROM checkins WHERE delivered_at IS NULL AND type = ?",
                                   [event_type]).fetchone()[0]

    def oldest_undelivered_age(self) -> float | None:
        """Seconds since the oldest undelivered event was committed, or None."""
        with self._lock:
            row = self.db.execute(
                "SELECT created_at FROM checkins WHERE delivered_at IS NULL ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None else max(0.0, self._wall() - row[0])

    def stats(self) -> dict[str, Any]:
        """The outbox's part of the device status (no personal data)."""
        age = self.oldest_undelivered_age()
        return {
            "depth": self.depth(),
            "oldest_undelivered_age_s": None if age is None else round(age, 1),
            "dropped": self.dropped(),
            "bytes_used": self.bytes_used(),
            "budget_bytes": self.budget_bytes,
            "alarm": self._alarm,
        }

    def recent(self, since: float, types: tuple[str, ...]) -> list[dict[str, Any]]:
        """Events of ``types`` committed since ``since`` (wall time), as dicts of ``type`` and ``claims``:
        what the door's own site estimate reads (kiosk.siteestimate), for as long as retention keeps them."""
        with self._lock:
            rows = self.db.execute(
                f"SELECT type, claims FROM checkins WHERE created_at >= ? AND type IN ({','.join('?' * len(types))})"
                " ORDER BY seq", [since, *types]).fetchall()
        return [{"type": t, "claims": json.loads(c)} for t, c in rows]

    def all(self) -> list[CheckIn]:
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, event_id, type, claims, delivered_at, evidence FROM checkins ORDER BY seq"
            ).fetchall()
        return [_row_to_checkin(r) for r in rows]


@dataclass(frozen=True)
class _Notice:
    """An event that is not a door decision, shaped like a :class:`Decision` for :meth:`Outbox.commit`."""

    event_type: str
    outcome: str
    reason: str | None = None
    resident_id: None = None
    distance: None = None
    margin: None = None
    frames: int = 0
    liveness: dict = field(default_factory=dict)
    method: None = None


def _row_to_checkin(row) -> CheckIn:
    claims = json.loads(row[3])
    claims["seq"] = row[0]
    if len(row) > 5 and row[5] is not None:
        claims["evidence_jpeg"] = base64.b64encode(row[5]).decode("ascii")
    return CheckIn(
        seq=row[0], event_id=row[1], type=row[2], claims=claims, delivered_at=row[4] if len(row) > 4 else None
    )


def _num(x: float | None) -> float | None:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return round(float(x), 6)
