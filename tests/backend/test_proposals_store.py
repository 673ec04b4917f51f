"""Doors' proposals in the back end's store (SQLite and PostgreSQL): filed as they came, sealed; one per
invitation, whichever door sends it; decided once; erased with their resident; purged past retention."""

from __future__ import annotations

import time

from kiosk.backend.proposals import APPROVED, PENDING, REJECTED, decide, proposals
from kiosk.backend.store import Incoming, Store, open_store
from kiosk.sync.events.format import PROPOSAL_EVENT

SEALED = "eyJhbGciOiJFQ0RILUVTK0EyNTZLVyJ9.a2V5.aXY.c2VhbGVk.dGFn"  # opaque to the back end


def proposal(i: int, invitation: str, *, device: str = "door-1", resident: str | None = "r-1",
             at: float | None = None) -> Incoming:
    claims = {"event_id": f"0190-{device}-{i:06d}", "seq": i, "site": "elm-court", "device": device,
              "type": PROPOSAL_EVENT, "outcome": "ENROLL_PROPOSED", "method": "invitation", "resident_id": resident,
              "time": time.time() - 5 if at is None else at, "v": 1, "proposal": SEALED + str(i),
              "invitation": invitation, "proposal_kind": "enrollment"}
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
        r = s.store_batch([proposal(1, "inv-bbbbbbbbbbbbbbbb", device="door-2"),
                           proposal(2, "inv-bbbbbbbbbbbbbbbb"), proposal(3, "inv-cccccccccccccccc")])
        assert r.stored == 3 and r.proposals_refused == ["invitation_used", "invitation_used"], r
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


def sealed_rows(s: Store) -> set[str]:
    return {r["proposal"] for r in proposals(s, status=None) if r["proposal"]}


def test_erasing_a_resident_deletes_their_proposals_and_keeps_out_those_made_before(store_url):
    with open_store(store_url) as s:
        s.store_batch([proposal(1, "inv-ffffffffffffffff", resident="resident-ada"),
                       proposal(2, "inv-gggggggggggggggg", resident="resident-bob")])
        [mine] = [r for r in proposals(s) if r["invitation"] == "inv-ffffffffffffffff"]
        # Whose it is, only as the store's keyed hash: no readable id in the proposal's row.
        assert mine["resident_hash"] == s.resident_hash("resident-ada") and "resident-ada" not in repr(mine)
        assert s.erase_resident("resident-ada") == 1  # its enroll_proposed event
        assert sealed_rows(s) == {SEALED + "2"}, "the erased resident's sealed descriptors are gone"
        assert [r["invitation"] for r in proposals(s, status=None)] == ["inv-gggggggggggggggg"]
        # The same proposal again (a redelivery), another door's for the same invitation, and one an offline
        # door made before the erasure: refused as erased check-ins are, not filed again.
        r = s.store_batch([proposal(1, "inv-ffffffffffffffff", resident="resident-ada"),
                           proposal(3, "inv-ffffffffffffffff", device="door-2", resident="resident-ada"),
                           proposal(4, "inv-hhhhhhhhhhhhhhhh", resident="resident-ada")])
        assert r.stored == 0 and r.erased == 3
        assert sealed_rows(s) == {SEALED + "2"}
        # Enrolled again later (a new invitation, after the erasure): filed.
        assert s.store_batch([proposal(5, "inv-iiiiiiiiiiiiiiii", resident="resident-ada", at=time.time() + 5)]).stored == 1
        assert sealed_rows(s) == {SEALED + "2", SEALED + "5"}


def test_a_proposal_without_its_resident_is_not_filed(store_url):
    with open_store(store_url) as s:
        s.store_batch([proposal(1, "inv-jjjjjjjjjjjjjjjj", resident=None)])
        assert proposals(s, status=None) == []
        assert [x["reason"] for x in s.refusals()] == ["bad_proposal"]


def test_the_purge_takes_proposals_past_retention_pending_or_decided(store_url):
    old = time.time() - 40 * 86400
    with open_store(store_url) as s:
        s.store_batch([proposal(1, "inv-kkkkkkkkkkkkkkkk", at=old), proposal(2, "inv-llllllllllllllll", at=old),
                       proposal(3, "inv-mmmmmmmmmmmmmmmm"), proposal(4, "inv-nnnnnnnnnnnnnnnn")])
        assert decide(s, "inv-llllllllllllllll", REJECTED) and decide(s, "inv-nnnnnnnnnnnnnnnn", APPROVED)
        s.purge(30 * 86400)
        left = {r["invitation"]: r["status"] for r in proposals(s, status=None)}
        assert left == {"inv-mmmmmmmmmmmmmmmm": PENDING, "inv-nnnnnnnnnnnnnnnn": APPROVED}


def test_through_the_ingest_an_erased_residents_proposals_go_and_stay_out(rig):
    """The real kiosk-ingest behind the broker: a door's proposal is filed under the keyed hash; erased with
    the resident; a redelivery and another door's proposal made before the erasure are refused as erased."""
    def sealed_event(door, invitation, **kw):
        c = rig.claims(door, type=PROPOSAL_EVENT, outcome="ENROLL_PROPOSED", method="invitation",
                       resident_id="resident-ada", proposal=SEALED, invitation=invitation, proposal_kind="enrollment",
                       **kw)
        return c, rig.sealed(door, c)

    first, payload = sealed_event("door-2", "inv-oooooooooooooooo")
    rig.publish("door-2", payload)
    assert rig.wait_stored(first["event_id"])
    [row] = proposals(rig.store)
    assert row["resident_hash"] == rig.store.resident_hash("resident-ada")
    assert rig.store.erase_resident("resident-ada") == 1
    assert proposals(rig.store, status=None) == []
    sha = rig.publish("door-2", payload)  # the broker's redelivery, or a replay
    other, other_payload = sealed_event("door-1", "inv-oooooooooooooooo", time=first["time"] - 1)
    other_sha = rig.publish("door-1", other_payload)
    assert [r["reason"] for r in rig.wait_refused(sha)] == ["erased"]
    assert [r["reason"] for r in rig.wait_refused(other_sha)] == ["erased"]
    assert proposals(rig.store, status=None) == [] and other["event_id"] not in rig.stored_ids()
