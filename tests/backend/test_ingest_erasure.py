"""Erased records stay erased: a redelivery, a replay or a late event from an offline door is refused, not stored.

Through a real Mosquitto into a real ``kiosk-ingest`` (SQLite and
PostgreSQL), with erasure and purge done by the real ``kiosk-admin report``.
What an erasure leaves behind is a tombstone per erased event and a keyed
hash of the resident, never the resident id.
"""

from __future__ import annotations

import time

import pytest

from harness.ingest_kit import wait_for
from ingest_rig import IngestRig
from kiosk.admin import main as kiosk_admin
from kiosk.backend.store import Incoming, open_store


def erase(url: str, resident: str) -> None:
    assert kiosk_admin(["report", "erase", "--store", url, "--id", resident, "--yes"]) == 0


def store_text(url: str) -> str:
    """Everything the store holds, as text (to look for an id that must not be there)."""
    with open_store(url, migrate=False) as s:
        rows = [*s.events(), *s.refusals()]
        with s._lock, s._d.transaction() as cur:
            for table in ("tombstones", "erased_residents", "erasures"):
                cur.execute(f"SELECT * FROM {table}")
                rows.extend(cur.fetchall())
    return repr(rows)


@pytest.mark.e2e
def test_erase_then_replay_the_erased_event_is_refused(rig):
    claims = rig.claims("door-1", resident_id="r-erase-me")
    sealed = rig.sealed("door-1", claims)
    rig.publish("door-1", sealed)
    assert rig.wait_stored(claims["event_id"])
    erase(rig.url, "r-erase-me")
    assert claims["event_id"] not in rig.stored_ids()
    # The same bytes again (a redelivery, a replay), and the same event sealed afresh.
    for payload in (sealed, rig.sealed("door-1", claims)):
        sha = rig.publish("door-1", payload)
        assert [r["reason"] for r in rig.wait_refused(sha)] == ["erased"]
    assert claims["event_id"] not in rig.stored_ids()
    assert "r-erase-me" not in store_text(rig.url)
    # Another resident's events are stored as before.
    assert rig.wait_stored(rig.genuine("door-1", resident_id="r-stays"))


@pytest.mark.e2e
def test_purge_then_replay_the_purged_event_is_refused(rig):
    old = rig.claims("door-1", time=time.time() - 10 * 86400)
    sealed = rig.sealed("door-1", old)
    rig.publish("door-1", sealed)
    assert rig.wait_stored(old["event_id"])
    # Purged with a shorter retention than the ingest's own (400 days): the cutoff is remembered.
    assert kiosk_admin(["report", "purge", "--store", rig.url, "--retention-days", "5", "--yes"]) == 0
    assert old["event_id"] not in rig.stored_ids()
    sha = rig.publish("door-1", sealed)
    assert [r["reason"] for r in rig.wait_refused(sha)] == ["past_retention"]
    assert old["event_id"] not in rig.stored_ids()
    assert rig.wait_stored(rig.genuine("door-1"))


@pytest.mark.e2e
def test_events_older_than_the_ingests_retention_are_refused(broker, tmp_path):
    rig = IngestRig(broker, tmp_path, f"sqlite:///{tmp_path / 'events.db'}", retention_days=30.0).start()
    try:
        ancient = rig.claims("door-1", time=time.time() - 31 * 86400)
        sha = rig.publish("door-1", rig.sealed("door-1", ancient))
        assert [r["reason"] for r in rig.wait_refused(sha)] == ["past_retention"]
        assert rig.wait_stored(rig.genuine("door-1", time=time.time() - 29 * 86400))
    finally:
        rig.close()


@pytest.mark.e2e
def test_erase_while_a_door_is_offline_holding_that_residents_check_ins(rig, tmp_path):
    """The real outbox and publisher (loadgen): check-ins of r-1 … r-5 committed offline, r-1 erased, then sent."""
    door = "door-1"
    online = rig.fleet.config(door)
    offline = tmp_path / "offline.toml"
    offline.write_text(online.read_text().replace("enabled = true", "enabled = false", 1))
    first = rig.fleet.loadgen(door, "--events", "10", "--rate", "500", "--drain", "--timeout", "60")
    assert first.wait() == 0, first.stderr()
    assert wait_for(lambda: set(first.committed) <= rig.stored_ids(), 30)
    with open_store(rig.url, migrate=False) as s:
        r1_before = [e["event_id"] for e in s.events(resident_id="r-1")]
    assert r1_before
    from harness.ingest_kit import Producer

    held = Producer(offline, "--events", "10", "--rate", "500")  # the door is offline: all held in its outbox
    assert held.wait() == 0, held.stderr()
    erase(rig.url, "r-1")
    back = rig.fleet.loadgen(door, "--events", "0", "--drain", "--timeout", "60")  # online again: drains
    assert back.wait() == 0, back.stderr()
    with open_store(rig.url, migrate=False) as s:
        assert wait_for(lambda: len(set(held.committed) & rig.stored_ids())
                        + sum(r["reason"] == "erased" for r in s.refusals()) == len(held.committed), 30)
        assert list(s.events(resident_id="r-1")) == []
        stored_now = {e["event_id"] for e in s.events()}
        refused = [r for r in s.refusals() if r["reason"] == "erased"]
    # loadgen's residents: i % 4 == 3 is an unknown visitor, the rest r-(i % 5 + 1); i = 0 … 9.
    r1_held = [eid for i, eid in enumerate(held.committed) if i % 4 != 3 and i % 5 == 0]
    assert len(refused) == len(r1_held) == 2
    assert not set(r1_held) & stored_now
    assert set(held.committed) - set(r1_held) <= stored_now
    assert "'r-1'" not in store_text(rig.url) and '"r-1"' not in store_text(rig.url)


def test_a_re_enrolled_resident_is_stored_again_after_the_erasure(tmp_path):
    """The keyed hash holds back what came before the erasure, not what comes after."""
    with open_store(f"sqlite:///{tmp_path / 'e.db'}") as s:
        def event(eid: str, at: float) -> Incoming:
            return Incoming({"site": "s", "device": "d", "event_id": eid, "seq": int(at), "type": "checkin",
                             "resident_id": "r-9", "time": at}, at)

        now = time.time()
        s.store_batch([event("a", now - 100)])
        assert s.erase_resident("r-9", now=now - 50) == 1
        result = s.store_batch([event("b", now - 80), event("c", now - 10)])
        assert (result.stored, result.erased) == (1, 1)
        assert [e["event_id"] for e in s.events()] == ["c"]
        assert s.resident_hash("r-9") != s.resident_hash("r-8") and "r-9" not in s.resident_hash("r-9")
        # A check-in held from before the erasure by a door whose clock ran an hour ahead: its time says after the
        # erasure, but a time that far past its receipt cannot say; refused as erased (the ingest's clock rule).
        late = Incoming({**event("d", now + 3600).claims}, now)
        result = s.store_batch([late], max_clock_ahead_s=300.0)
        assert (result.stored, result.erased) == (0, 1)
        assert s.store_batch([late]).stored == 1, "without the rule, its time alone let it in"
