"""The outbox: durable commits, sequence numbers, delivery marks, retention, disk budget."""

from __future__ import annotations

import base64
import threading
import uuid

import pytest

from kiosk.config import OutboxSettings
from kiosk.db import open_database
from kiosk.errors import OutboxFull
from kiosk.match.decide import Decision, Outcome
from kiosk.sync.events.format import CLAIM_FIELDS
from kiosk.sync.events.outbox import Outbox


class Clock:
    """A wall clock the test moves."""

    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def accepted(i: int = 0, resident: str = "r-1") -> Decision:
    return Decision(Outcome.ACCEPTED, track_id=i, resident_id=resident, distance=0.3123456789, margin=0.1, frames=3)


def unknown(i: int = 0) -> Decision:
    return Decision(Outcome.UNKNOWN, track_id=i, distance=0.7, margin=float("inf"), frames=5)


@pytest.fixture
def db(tmp_path):
    d = open_database(tmp_path / "kiosk.db")
    yield d
    d.close()


@pytest.fixture
def bulk_db(db):
    """The same database without an fsync per commit: budget tests write hundreds of rows."""
    db.execute("PRAGMA synchronous=OFF")
    return db


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, site="test-site", device="kiosk-t1", wall_clock=clock)


def test_commit_assigns_increasing_seq_and_uuid7(outbox, clock):
    events = [outbox.commit(accepted(i)) for i in range(5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    ids = [uuid.UUID(e.event_id) for e in events]
    assert all(u.version == 7 for u in ids)
    assert len(set(ids)) == 5
    assert outbox.depth() == 5


def test_claim_set_is_complete_and_extra_claims_fill_defaults(outbox, clock):
    plain = outbox.commit(unknown(1))
    assert set(CLAIM_FIELDS) <= set(plain.claims)
    assert plain.claims["location_state"] is None and plain.claims["gallery_version"] is None
    assert plain.claims["model_id"] is None
    assert plain.claims["type"] == "unknown" and plain.claims["resident_id"] is None
    assert plain.claims["margin"] is None  # inf is not JSON

    ev = outbox.commit(accepted(2), gallery_version=7, model_id="dlib-resnet-v1", location_state="at_site")
    stored = outbox.undelivered()[1].claims
    assert stored == ev.claims
    assert stored["seq"] == ev.seq and stored["site"] == "test-site" and stored["device"] == "kiosk-t1"
    assert stored["type"] == "checkin" and stored["resident_id"] == "r-1"
    assert stored["distance"] == 0.312346 and stored["frames"] == 3
    assert (stored["gallery_version"], stored["model_id"], stored["location_state"]) == (7, "dlib-resnet-v1", "at_site")
    assert stored["time"] == clock.t


def test_extra_claims_cannot_replace_the_outboxs_own(outbox):
    with pytest.raises(ValueError, match="event_id"):
        outbox.commit(accepted(), event_id="forged")
    with pytest.raises(ValueError, match="site"):
        outbox.commit(accepted(), site="elsewhere")
    with pytest.raises(ValueError):  # not JSON: refused before anything is stored
        outbox.commit(accepted(), location_state=float("nan"))
    assert outbox.depth() == 0


def test_undelivered_in_order_and_marks(outbox):
    for i in range(10):
        outbox.commit(accepted(i))
    first = outbox.undelivered(limit=4)
    assert [e.seq for e in first] == [1, 2, 3, 4]
    assert [e.seq for e in outbox.undelivered(limit=3, after_seq=4)] == [5, 6, 7]
    outbox.mark_delivered(2)
    assert outbox.mark_delivered_many([1, 3, 3, 99]) == 2  # unknown and repeated seqs change nothing
    assert outbox.mark_delivered_many([1]) == 0  # delivered stays delivered, time unchanged
    assert [e.seq for e in outbox.undelivered(limit=3)] == [4, 5, 6]
    assert outbox.depth() == 7
    delivered = [e for e in outbox.all() if e.delivered_at is not None]
    assert [e.seq for e in delivered] == [1, 2, 3]


def test_commit_survives_reopening(tmp_path, clock):
    db = open_database(tmp_path / "k.db")
    ob = Outbox(db, site="s", device="d", wall_clock=clock)
    ids = [ob.commit(accepted(i)).event_id for i in range(3)]
    ob.mark_delivered(1)
    db.close()
    db2 = open_database(tmp_path / "k.db")
    ob2 = Outbox(db2, site="s", device="d", wall_clock=clock)
    assert [e.event_id for e in ob2.all()] == ids
    assert ob2.depth() == 2
    # Sequence numbers never go back, even after the newest row is erased.
    db2.execute("DELETE FROM checkins WHERE seq = 3")
    assert ob2.commit(accepted(9)).seq == 4
    assert db2.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db2.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db2.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db2.close()


def test_purge_erases_delivered_past_retention_only(db, clock):
    ob = Outbox(db, site="s", device="d", settings=OutboxSettings(retention_days=1), wall_clock=clock)
    for i in range(4):
        ob.commit(accepted(i))
    ob.mark_delivered_many([1, 2])
    clock.advance(3600)
    ob.mark_delivered(3)
    clock.advance(86400 - 1800)  # 1 and 2 were delivered 24.5 h ago, 3 only 23.5 h ago
    assert ob.purge_delivered() == 2
    assert [e.seq for e in ob.all()] == [3, 4]
    clock.advance(10 * 86400)
    assert ob.purge_delivered() == 1
    assert [e.seq for e in ob.all()] == [4]  # undelivered is kept, however old


def test_age_and_stats(outbox, clock):
    assert outbox.oldest_undelivered_age() is None
    outbox.commit(accepted(1))
    clock.advance(90)
    outbox.commit(accepted(2))
    stats = outbox.stats()
    assert stats["depth"] == 2 and stats["oldest_undelivered_age_s"] == 90.0
    assert stats["dropped"] == 0 and stats["alarm"] is None
    assert 0 < stats["bytes_used"] < stats["budget_bytes"] == 64 * 1024 * 1024


def test_evidence_only_when_configured_and_erased_on_delivery(db, clock):
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg-bytes\xff\xd9"
    off = Outbox(db, site="s", device="d", wall_clock=clock)
    off.commit(accepted(1), evidence=jpeg)
    assert "evidence_jpeg" not in off.undelivered()[0].claims
    assert db.execute("SELECT count(*) FROM checkins WHERE evidence IS NOT NULL").fetchone()[0] == 0

    on = Outbox(db, site="s", device="d", settings=OutboxSettings(evidence_crop=True), wall_clock=clock)
    ev = on.commit(accepted(2), evidence=jpeg)
    pending = {e.seq: e for e in on.undelivered()}
    assert base64.b64decode(pending[ev.seq].claims["evidence_jpeg"]) == jpeg
    on.mark_delivered(ev.seq)
    assert db.execute("SELECT evidence FROM checkins WHERE seq = ?", [ev.seq]).fetchone()[0] is None


def _fill(ob: Outbox, n: int, kind=accepted) -> list:
    return [ob.commit(kind(i)) for i in range(n)]


SMALL = 0.3  # MB: a few hundred events


def test_budget_erases_delivered_events_first(bulk_db, clock):
    db = bulk_db
    ob = Outbox(db, site="s", device="d", settings=OutboxSettings(disk_budget_mb=SMALL, when_full="refuse"), wall_clock=clock)
    first = _fill(ob, 300)  # the budget holds about 450
    ob.mark_delivered_many(e.seq for e in first)
    # More than the budget holds: delivered rows make room, nothing is refused.
    _fill(ob, 300)
    assert ob.budget_bytes * 0.5 < ob.bytes_used() < ob.budget_bytes + 64 * 1024
    assert ob.alarm is None and ob.dropped() == 0
    assert ob.depth() == 300
    assert len(ob.all()) < 600


def test_budget_refuse_policy_raises_and_alarms(bulk_db, clock, caplog):
    db = bulk_db
    ob = Outbox(db, site="s", device="d", settings=OutboxSettings(disk_budget_mb=SMALL, when_full="refuse"), wall_clock=clock)
    committed = 0
    with pytest.raises(OutboxFull):
        for i in range(5000):
            ob.commit(accepted(i))
            committed += 1
    assert 50 < committed < 5000
    assert ob.depth() == committed  # nothing undelivered was dropped
    assert ob.dropped() == 0
    assert "disk budget" in ob.alarm and "refuse" in ob.alarm
    assert any("disk budget" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    # Once the backlog is delivered there is room again, and the alarm clears.
    ob.mark_delivered_many(range(1, committed + 1))
    ob.commit(accepted(0))
    assert ob.alarm is None


def test_budget_drop_oldest_drops_non_checkins_first_and_counts(bulk_db, clock, caplog):
    db = bulk_db
    ob = Outbox(db, site="s", device="d", settings=OutboxSettings(disk_budget_mb=SMALL, when_full="drop_oldest"), wall_clock=clock)
    unknowns = _fill(ob, 60, unknown)
    checkins = _fill(ob, 700)
    dropped = ob.dropped()
    assert dropped > 0
    kept = {e.event_id for e in ob.all()}
    # Every unknown went before any check-in did.
    assert not {e.event_id for e in unknowns} & kept or all(e.event_id in kept for e in checkins)
    lost_checkins = [e for e in checkins if e.event_id not in kept]
    assert dropped == 60 + len(lost_checkins)
    # The oldest go first: what is kept is a contiguous newest run.
    kept_seqs = sorted(e.seq for e in ob.all())
    assert kept_seqs == list(range(kept_seqs[0], checkins[-1].seq + 1))
    assert ob.bytes_used() < ob.budget_bytes
    assert ob.alarm and "drop_oldest" in ob.alarm
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_budget_alarm_only_keeps_everything(bulk_db, clock):
    db = bulk_db
    ob = Outbox(db, site="s", device="d", settings=OutboxSettings(disk_budget_mb=SMALL, when_full="alarm_only"), wall_clock=clock)
    _fill(ob, 700)
    assert ob.depth() == 700 and ob.dropped() == 0
    assert ob.bytes_used() > ob.budget_bytes
    assert "alarm_only" in ob.alarm


def test_listeners_and_concurrent_commits_and_marks(outbox):
    seen: list[int] = []
    outbox.add_listener(seen.append)
    errors: list[BaseException] = []

    def producer(k):
        try:
            for i in range(40):
                outbox.commit(accepted(i, resident=f"r-{k}"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def marker():
        try:
            for _ in range(100):
                outbox.mark_delivered_many(e.seq for e in outbox.undelivered(limit=5))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)] + [threading.Thread(target=marker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(seen) == list(range(1, 121))
    assert len(outbox.all()) == 120
    outbox.remove_listener(seen.append)
    outbox.commit(accepted())
    assert len(seen) == 120


@pytest.mark.slow
def test_bench_outbox_script_runs(tmp_path):
    """The benchmark (scripts/bench-outbox) still works, on a few events."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench-outbox"
    r = subprocess.run([sys.executable, str(script), "--events", "200", "--json", "--keep", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["lost"] == 0 and result["unexpected"] == 0 and result["invalid"] == 0
    assert result["events"] == 200 and result["integrity_check"] == "ok"
    assert result["default_budget_holds_events"] >= 50_000
    assert "none lost: yes" in r.stdout
