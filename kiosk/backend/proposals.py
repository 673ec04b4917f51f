"""Doors' proposals in the back-end store: filed as they come, one per invitation, pending until the admin decides.

An ``enroll_proposed`` event carries a proposal sealed to the admin's key
(:mod:`kiosk.enrollment.proposal`), which the back end cannot open and keeps
as it came. The event is stored like any other, without the sealed proposal;
the proposal goes to ``proposals`` under its invitation's nonce. A second
proposal for the same invitation (another door of the site, or a replay with
a new event id) is refused (``invitation_used``): an invitation enrolls once.

Whose a proposal is, the back end keeps only as the keyed hash an erasure
keeps (:meth:`kiosk.backend.store.Store.resident_hash`): the event names the
resident as a check-in does (the invitation's id, signed by the admin), the
event row keeps it (erasable), the proposal row its hash. Erasing a resident
deletes their proposals; a proposal for an erased resident older than the
erasure is refused as a check-in is (``erased``), and the admin's review
refuses one whose resident was erased after the invitation was issued
(:func:`erased_since`). The purge takes proposals past retention.

A door template (``proposal_kind`` "door_template", :mod:`kiosk.gallery.adapt`)
has no invitation: it is filed under the event id of the visit it came from
(the claim ``visit``), in the same column, so a visit proposes once.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Any

from ..sync.events.format import DOOR_TEMPLATE_PROPOSAL as DOOR_TEMPLATE
from ..sync.events.format import ENROLLMENT_PROPOSAL as ENROLLMENT
from ..sync.events.format import PROPOSAL_EVENT

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
COLUMNS = ("invitation", "kind", "site", "device", "event_id", "event_time", "received_at", "proposal", "status",
           "decided_at", "note", "resident_hash")


def is_proposal(claims: dict[str, Any]) -> bool:
    return claims.get("type") == PROPOSAL_EVENT and claims.get("proposal") is not None


def file_proposals(store, cur, events: Sequence) -> list[tuple[Any, str, str]]:
    """File the proposals of newly stored events (in the caller's transaction); those refused: (event, reason, why)."""
    refused = []
    q = store._d.q
    for ev in events:
        c = ev.claims
        if not is_proposal(c):
            continue
        kind = c.get("proposal_kind") or ENROLLMENT
        key = c.get("visit") if kind == DOOR_TEMPLATE else c.get("invitation")
        if kind not in (ENROLLMENT, DOOR_TEMPLATE) or not key or not isinstance(c.get("resident_id"), str):
            refused.append((ev, "bad_proposal", f"event {c['event_id']}: a proposal without its "
                                                f"{'visit' if kind == DOOR_TEMPLATE else 'invitation'} or resident, "
                                                "or of no kind known"))
            continue
        cur.execute(q("INSERT INTO proposals (invitation, kind, site, device, event_id, event_time, received_at,"
                      " proposal, status, resident_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT (invitation) DO NOTHING"),
                    [key, kind, c["site"], c["device"], c["event_id"],
                     float(c["time"]), ev.received_at, c["proposal"], PENDING, store.resident_hash(c["resident_id"])])
        if cur.rowcount != 1:
            what = "visit" if kind == DOOR_TEMPLATE else "invitation"
            refused.append((ev, f"{what}_used", f"event {c['event_id']}: a proposal for this {what} was filed before"))
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


def is_pending(store, invitation: str) -> bool:
    """Whether the proposal filed under ``invitation`` still waits for a decision."""
    with store._lock, store._d.transaction() as cur:
        cur.execute(store._d.q("SELECT 1 FROM proposals WHERE invitation = ? AND status = ?"), [invitation, PENDING])
        return cur.fetchone() is not None


def erased_since(store, resident_id: str, since: float) -> bool:
    """Whether ``resident_id`` was erased at or after ``since`` (an invitation issued before the erasure)."""
    with store._lock, store._d.transaction() as cur:
        cur.execute(store._d.q("SELECT erased_at FROM erased_residents WHERE resident_hash = ?"),
                    [store.resident_hash(resident_id)])
        row = cur.fetchone()
    return row is not None and float(row[0]) >= since


def filed_for(store, row: dict[str, Any], resident_id: str) -> bool:
    """Whether a filed proposal's row names ``resident_id`` (by its keyed hash): what erasure would reach."""
    return row.get("resident_hash") is not None and hmac.compare_digest(row["resident_hash"],
                                                                        store.resident_hash(resident_id))


def erase(cur, q, digest: str) -> int:
    """Delete the proposals of the resident whose keyed hash is ``digest`` (in the caller's transaction)."""
    cur.execute(q("DELETE FROM proposals WHERE resident_hash = ?"), [digest])
    return cur.rowcount


def purge(cur, q, cutoff: float) -> int:
    """Delete proposals, pending or decided, made before ``cutoff`` (past retention, as their events)."""
    cur.execute(q("DELETE FROM proposals WHERE event_time < ?"), [cutoff])
    return cur.rowcount
