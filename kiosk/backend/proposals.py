"""Doors' proposals in the back-end store: filed as they come, one per invitation, pending until the admin decides.

An ``enroll_proposed`` event carries a proposal sealed to the admin's key
(:mod:`kiosk.enrollment.proposal`), which the back end cannot open and keeps
as it came. The event is stored like any other, without the sealed proposal;
the proposal goes to ``proposals`` under its invitation's nonce. A second
proposal for the same invitation (another door of the site, or a replay with
a new event id) is refused (``invitation_used``): an invitation enrolls once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..sync.events.format import PROPOSAL_EVENT

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
COLUMNS = ("invitation", "kind", "site", "device", "event_id", "event_time", "received_at", "proposal", "status",
           "decided_at", "note")


def is_proposal(claims: dict[str, Any]) -> bool:
    return claims.get("type") == PROPOSAL_EVENT and claims.get("proposal") is not None


def file_proposals(store, cur, events: Sequence) -> list[tuple[Any, str]]:
    """File the proposals of newly stored events (in the caller's transaction); those refused, with why."""
    refused = []
    q = store._d.q
    for ev in events:
        c = ev.claims
        if not is_proposal(c):
            continue
        if not c.get("invitation"):
            refused.append((ev, "a proposal without its invitation"))
            continue
        cur.execute(q("INSERT INTO proposals (invitation, kind, site, device, event_id, event_time, received_at,"
                      " proposal, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (invitation) DO NOTHING"),
                    [c["invitation"], c.get("proposal_kind") or "enrollment", c["site"], c["device"], c["event_id"],
                     float(c["time"]), ev.received_at, c["proposal"], PENDING])
        if cur.rowcount != 1:
            refused.append((ev, f"event {c['event_id']}: a proposal for this invitation was filed before"))
    return refused


def proposals(store, *, status: str | None = PENDING) -> list[dict[str, Any]]:
    """Filed proposals (the sealed proposal as it came), oldest first; ``status`` None for all."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM proposals"
    args = []
    if status is not None:
        sql += " WHERE status = ?"
        args.append(status)
    with store._lock, store._d.transaction() as cur:
        cur.execute(store._d.q(sql + " ORDER BY received_at, invitation"), args)
        return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def decide(store, invitation: str, status: str, *, note: str | None = None, now: float | None = None) -> bool:
    """Mark a pending proposal approved or rejected; False if there is no pending one under ``invitation``."""
    if status not in (APPROVED, REJECTED):
        raise ValueError(f"a proposal is {APPROVED} or {REJECTED}, not {status!r}")
    with store._lock, store._d.transaction() as cur:
        cur.execute(store._d.q("UPDATE proposals SET status = ?, decided_at = ?, note = ?, proposal = ?"
                               " WHERE invitation = ? AND status = ?"),
                    [status, time.time() if now is None else now, note, "", invitation, PENDING])
        return cur.rowcount == 1
