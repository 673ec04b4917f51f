"""The check-in outbox: every decision is committed here before anything else.

The ``checkins`` table is the outbox. A row gets its per-device sequence
number (``seq``) and a UUIDv7 ``event_id`` when it is committed; the
publisher copies undelivered rows to MQTT and marks them delivered only on
the broker's PUBACK.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils
import uuid6

from ..match.decide import Decision

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A committed event, as stored in the outbox."""

    seq: int
    event_id: str
    type: str
    claims: dict[str, Any]
    delivered_at: float | None = None


class Outbox:
    """Commits decisions as events and hands undelivered ones to the publisher."""

    def __init__(self, db: sqlite_utils.Database, *, site: str, device: str, wall_clock=time.time):
        self.db = db
        self.site = site
        self.device = device
        self._wall = wall_clock
        self._lock = threading.Lock()

    def commit(self, decision: Decision, **extra: Any) -> CheckIn:
        """Commit one decision durably and return the stored event.

        ``extra`` adds claims (location state, gallery version, model id …).
        """
        now = self._wall()
        event_id = str(uuid6.uuid7())
        claims: dict[str, Any] = {
            "event_id": event_id,
            "site": self.site,
            "device": self.device,
            "type": decision.outcome.event_type,
            "outcome": decision.outcome.value,
            "resident_id": decision.resident_id,
            "distance": _num(decision.distance),
            "margin": _num(decision.margin),
            "frames": decision.frames,
            "reason": decision.reason,
            "liveness": decision.liveness or None,
            "time": now,
        }
        claims.update(extra)
        with self._lock, self.db.atomic():
            cur = self.db.execute(
                "INSERT INTO checkins(event_id, type, outcome, resident_id, distance, margin, frames,"
                " reason, created_at, claims) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    event_id,
                    claims["type"],
                    decision.outcome.value,
                    decision.resident_id,
                    _num(decision.distance),
                    _num(decision.margin),
                    decision.frames,
                    decision.reason,
                    now,
                    json.dumps(claims, sort_keys=True),
                ],
            )
            seq = cur.lastrowid
        claims["seq"] = seq
        return CheckIn(seq=seq, event_id=event_id, type=claims["type"], claims=claims)

    def undelivered(self, limit: int = 100, after_seq: int = 0) -> list[CheckIn]:
        rows = self.db.execute(
            "SELECT seq, event_id, type, claims FROM checkins WHERE delivered_at IS NULL AND seq > ?"
            " ORDER BY seq LIMIT ?",
            [after_seq, limit],
        ).fetchall()
        return [_row_to_checkin(r) for r in rows]

    def mark_delivered(self, seq: int) -> None:
        with self._lock, self.db.atomic():
            self.db.execute("UPDATE checkins SET delivered_at = ? WHERE seq = ?", [self._wall(), seq])

    def depth(self) -> int:
        return self.db.execute("SELECT count(*) FROM checkins WHERE delivered_at IS NULL").fetchone()[0]

    def all(self) -> list[CheckIn]:
        rows = self.db.execute("SELECT seq, event_id, type, claims, delivered_at FROM checkins ORDER BY seq").fetchall()
        return [_row_to_checkin(r) for r in rows]


def _row_to_checkin(row) -> CheckIn:
    claims = json.loads(row[3])
    claims["seq"] = row[0]
    return CheckIn(seq=row[0], event_id=row[1], type=row[2], claims=claims, delivered_at=row[4] if len(row) > 4 else None)


def _num(x: float | None) -> float | None:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return round(float(x), 6)
