"""Doors' proposals in the back end's store (SQLite and PostgreSQL): filed as they came, sealed; one per
invitation, whichever door sends it; decided once."""

from __future__ import annotations

import time

from kiosk.backend.proposals import APPROVED, PENDING, REJECTED, decide, proposals
from kiosk.backend.store import Incoming, open_store
from kiosk.sync.events.format import PROPOSAL_EVENT

SEALED = "eyJhbGciOiJFQ0RILUVTK0EyNTZLVyJ9.a2V5.aXY.c2VhbGVk.dGFn"  # opaque to the back end


def proposal(i: int, invitation: str, *, device: str = "door-1") -> Incoming:
    claims = {"event_id": f"0190-{device}-{i:06d}", "seq": i, "site": "elm-court", "device": device,
              "type": PROPOSAL_EVENT, "outcome": "ENROLL_PROPOSED", "method": "invitation", "resident_id": None,
              "time": time.time() - 5, "v": 1, "proposal": SEALED + str(i), "invitation": invitation,
              "proposal_kind": "enrollment"}
    return Incoming(claims, received_at=time.time(), topic=f"kiosk/elm-court/{device}/events")


def test_a_proposal_is_filed_sealed_and_its_event_stored_without_it(store_url):
    with open_store(store_url) as s:
        r = s.store_batch([proposal(1, "inv-aaaaaaaaaaaaaaaa")])
        assert r.stored == 1 and r.refused == 0
        [row] = proposals(s)
        assert (row["invitation"], row["device"], row["status"], row["proposal"]) == (
            "inv-aaaaaaaaaaaaaaaa", "door-1", PENDING, SEALED + "1")
        claims = s.claims_of("elm-court", "door-1", "0190-door-1-000001")
        assert "proposal" not in claims and claims["invitation"] == "inv-aaaaaaaaaaaaaaaa"


def test_a_second_proposal_for_one_invitation_is_refused_from_any_door(store_url):
    with open_store(store_url) as s:
        s.store_batch([proposal(1, "inv-bbbbbbbbbbbbbbbb")])
        # Another door of the site (the resident went on to a second door), and a replay under a new id,
        # in one batch with a proposal for another invitation.
        s.store_batch([proposal(1, "inv-bbbbbbbbbbbbbbbb", device="door-2"), proposal(2, "inv-bbbbbbbbbbbbbbbb"),
                       proposal(3, "inv-cccccccccccccccc")])
        rows = proposals(s)
        assert [(r["invitation"], r["device"], r["proposal"]) for r in rows] == [
            ("inv-bbbbbbbbbbbbbbbb", "door-1", SEALED + "1"), ("inv-cccccccccccccccc", "door-1", SEALED + "3")]
        used = [x for x in s.refusals() if x["reason"] == "invitation_used"]
        assert sorted(x["topic"] for x in used) == ["kiosk/elm-court/door-1/events", "kiosk/elm-court/door-2/events"]


def test_a_proposal_is_decided_once_and_its_sealed_descriptors_go(store_url):
    with open_store(store_url) as s:
        s.store_batch([proposal(1, "inv-dddddddddddddddd"), proposal(2, "inv-eeeeeeeeeeeeeeee")])
        assert decide(s, "inv-dddddddddddddddd", APPROVED)
        assert not decide(s, "inv-dddddddddddddddd", REJECTED), "decided already"
        assert decide(s, "inv-eeeeeeeeeeeeeeee", REJECTED)
        assert proposals(s) == []
        done = {r["invitation"]: (r["status"], r["proposal"]) for r in proposals(s, status=None)}
        assert done == {"inv-dddddddddddddddd": (APPROVED, ""), "inv-eeeeeeeeeeeeeeee": (REJECTED, "")}
        # Decided, the invitation still enrolls nobody else.
        s.store_batch([proposal(3, "inv-dddddddddddddddd")])
        assert len(proposals(s, status=None)) == 2
