"""One hostile message must not stop ``kiosk-ingest`` for every door: each attack the review found, replayed.

Through a real Mosquitto (TLS, the documented ACL) into a real
``kiosk-ingest`` on SQLite and on PostgreSQL. Each message ends stored or
recorded as refused with a printable reason, and is acknowledged: the
broker does not send it again after a restart, and door-2's honest events
keep being stored.
"""

from __future__ import annotations

import base64
import json
import shlex
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.docs import docs_snippet, sh_lines
from harness.ingest_kit import REPO, _env, wait_for
from ingest_rig import IngestRig


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwe_with_header(header_json: str) -> str:
    """A compact JWE whose protected header is this JSON text (the rest is junk): no key needed to send it."""
    return ".".join([b64(header_json.encode()), b64(b"k" * 40), b64(b"iv" * 6), b64(b"ct" * 20), b64(b"t" * 16)])


NESTED = '{"alg": ' + "[" * 1000 + "]" * 1000 + ', "enc": "A256GCM"}'

#: What anyone holding one door's broker certificate can send (no signing key needed).
HEADER_ATTACKS = {
    "header_nested_1000_deep": NESTED,
    "header_lone_surrogate": '{"alg": "\\ud800", "enc": "A256GCM", "kid": "x"}',
    "header_nul_byte": '{"alg": "ECDH-ES+A256KW\\u0000", "enc": "A256GCM\\u0000", "kid": "\\u0000"}',
}

#: What a stolen kiosk (its signing key) can send: genuine signatures over insane claims.
CLAIM_ATTACKS = {
    "seq_2_to_the_70": {"seq": 2**70},
    "time_10_to_the_400": {"time": 10**400},
    "resident_id_an_object": {"resident_id": {"$gt": ""}},
    "nul_in_a_claim": {"outcome": "ACCEPTED\x00"},
    "surrogate_in_a_claim": {"resident_id": "r-\udc80"},
    "nul_in_an_unknown_claim": {"note": ["\x00"]},
    "time_before_2000": {"time": 1.0},
}


def assert_printable(row: dict) -> None:
    for key in ("topic", "reason", "detail"):
        text = row[key]
        text.encode("utf-8")  # no lone surrogate
        assert not any(ord(c) < 0x20 for c in text), (key, text)


def assert_honest_doors_still_served(rig: IngestRig) -> None:
    event_id = rig.genuine("door-2")
    assert rig.wait_stored(event_id), rig.ingest.log_text()
    assert rig.ingest.running()


@pytest.mark.e2e
@pytest.mark.parametrize("attack", HEADER_ATTACKS, ids=list(HEADER_ATTACKS))
def test_a_hostile_header_is_refused_and_the_back_end_goes_on(rig, attack):
    sha = rig.publish("door-1", jwe_with_header(HEADER_ATTACKS[attack]))
    refused = rig.wait_refused(sha)
    assert [r["reason"] for r in refused] == ["malformed"], refused
    assert_printable(refused[0])
    assert_honest_doors_still_served(rig)


@pytest.mark.e2e
@pytest.mark.parametrize("attack", CLAIM_ATTACKS, ids=list(CLAIM_ATTACKS))
def test_insane_claims_signed_with_a_stolen_door_key_are_refused(rig, attack):
    claims = rig.claims("door-1", **CLAIM_ATTACKS[attack])
    sha = rig.publish("door-1", rig.sealed("door-1", claims))
    refused = rig.wait_refused(sha)
    assert [r["reason"] for r in refused] == ["bad_claims"], refused
    assert_printable(refused[0])
    assert "r-\\udc80" not in refused[0]["detail"] and "$gt" not in refused[0]["detail"]  # names the claim, not its value
    assert_honest_doors_still_served(rig)
    assert claims["event_id"] not in rig.stored_ids()


@pytest.mark.e2e
def test_refused_messages_are_acknowledged_so_a_restart_does_not_take_them_again(rig):
    """The crash loop: before, the broker sent the poison again after every restart."""
    shas = [rig.publish("door-1", jwe_with_header(h)) for h in HEADER_ATTACKS.values()]
    shas += [rig.publish("door-1", rig.sealed("door-1", rig.claims("door-1", **kw))) for kw in CLAIM_ATTACKS.values()]
    assert all(rig.wait_refused(s) for s in shas)
    before = len(rig.refusals())
    assert rig.ingest.stop() == 0
    rig.start()
    assert_honest_doors_still_served(rig)
    time.sleep(1.0)  # anything the broker still held would have come by now
    assert len(rig.refusals()) == before
    assert all(len(rig.refusals(s)) == 1 for s in shas)


def _add_poison_trigger(url: str) -> None:
    """A real store error for one resident id: a trigger in the store itself refuses the row."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.resident_id = 'poison-pill'"
                         " BEGIN SELECT RAISE(ABORT, 'this row cannot be stored'); END")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " IF NEW.resident_id = 'poison-pill' THEN RAISE EXCEPTION 'this row cannot be stored'; END IF;"
                     " RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()")


@pytest.mark.e2e
def test_a_store_error_is_isolated_to_its_message_by_splitting_the_batch(rig):
    _add_poison_trigger(rig.url)
    # One batch: honest events on both sides of the one the store cannot take.
    door1 = [rig.claims("door-1") for _ in range(6)]
    poison = rig.claims("door-1", resident_id="poison-pill")
    payloads = [rig.sealed("door-1", c) for c in door1[:3]] + [rig.sealed("door-1", poison)] + \
        [rig.sealed("door-1", c) for c in door1[3:]]
    shas = [rig.publish("door-1", p) for p in payloads]
    assert wait_for(lambda: {c["event_id"] for c in door1} <= rig.stored_ids(), 30), rig.ingest.log_text()
    refused = rig.wait_refused(shas[3])
    assert [r["reason"] for r in refused] == ["unstorable"] and "poison-pill" not in refused[0]["detail"]
    assert poison["event_id"] not in rig.stored_ids()
    assert_honest_doors_still_served(rig)
    assert "the store refused one message" in rig.ingest.log_text()


@pytest.mark.e2e
def test_a_message_larger_than_any_event_never_reaches_the_back_end(rig):
    """The back end asks the broker for at most MAX_PACKET_BYTES per message: 300 kB on a door's events topic (which
    the test broker lets through) is dropped by the broker for it, so it never takes the back end's memory."""
    from kiosk.backend.consumer import MAX_PACKET_BYTES

    huge = b"x" * (MAX_PACKET_BYTES + 40_000)
    sha = rig.publish("door-1", huge)
    assert_honest_doors_still_served(rig)
    time.sleep(1.0)
    assert rig.refusals(sha) == [] and rig.ingest.running()
    small = rig.publish("door-1", b"y" * 70_000)  # the largest a door's envelope can be, and more: it arrives
    assert rig.wait_refused(small)


@pytest.mark.e2e
def test_a_message_sent_without_puback_is_dropped_and_counted(rig):
    """QoS 0 has no flow control: a door's certificate flooding it would fill the back end while the store is slow.
    No door sends at QoS 0, so the back end drops such a message, counts it and says so, and goes on."""
    event = rig.claims("door-1")
    rig.publish("door-1", rig.sealed("door-1", event), qos=0, timeout=0.5)
    assert wait_for(lambda: "dropped messages sent at QoS 0" in rig.ingest.log_text(), 10), rig.ingest.log_text()
    assert_honest_doors_still_served(rig)
    assert event["event_id"] not in rig.stored_ids()


def _refuse_every_row(url: str, errcode: str) -> None:
    """The store takes no row for a while, neither an event nor a refusal: a trigger refuses every insert (on
    PostgreSQL with ``errcode``: 25006 is what a read-only store says, P0001 any other error)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            for table in ("events", "refused"):
                conn.execute(f"CREATE TRIGGER closed_{table} BEFORE INSERT ON {table}"
                             " BEGIN SELECT RAISE(ABORT, 'the store takes nothing now'); END")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION closed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     f" RAISE EXCEPTION 'the store takes nothing now' USING ERRCODE = '{errcode}'; END $$")
        for table in ("events", "refused"):
            conn.execute(f"CREATE TRIGGER closed_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION closed()")


def _open_again(url: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            for table in ("events", "refused"):
                conn.execute(f"DROP TRIGGER closed_{table}")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION closed() CASCADE")


@pytest.mark.e2e
@pytest.mark.parametrize("errcode", ["25006", "P0001"])
def test_a_store_that_takes_nothing_for_a_while_loses_no_event(rig, errcode):
    """Every write fails for a while, with an error that is not a lost connection (a read-only or full store, a
    revoked privilege): the events wait, unacknowledged, and are stored when the store takes writes again; none of
    them is recorded as refused in its place."""
    if errcode != "P0001" and rig.url.startswith("sqlite:///"):
        pytest.skip("SQLite has no error codes of its own: its trigger's error is the P0001 case")
    _refuse_every_row(rig.url, errcode)
    claims = [rig.claims("door-1") for _ in range(4)]
    shas = [rig.publish("door-1", rig.sealed("door-1", c)) for c in claims]
    assert wait_for(lambda: "store" in rig.ingest.log_text().split("subscribed")[-1], 20), rig.ingest.log_text()
    time.sleep(2.0)  # a few rounds of retries while nothing can be written
    assert not {c["event_id"] for c in claims} & rig.stored_ids()
    _open_again(rig.url)
    assert wait_for(lambda: {c["event_id"] for c in claims} <= rig.stored_ids(), 60), rig.ingest.log_text()
    assert not any(rig.refusals(s) for s in shas), [rig.refusals(s) for s in shas]
    assert_honest_doors_still_served(rig)


def ingest_health(config) -> subprocess.CompletedProcess:
    """docs/backend.md's health command, as printed, with the test's config in place of /etc/kiosk's."""
    argv = shlex.split(sh_lines(docs_snippet("backend-health"))[0])
    assert argv[0] == "kiosk-ingest" and "/etc/kiosk/ingest.toml" in argv
    argv = [str(config) if a == "/etc/kiosk/ingest.toml" else a for a in argv[1:]]
    return subprocess.run([sys.executable, "-m", "kiosk.backend.ingest", *argv],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)


@pytest.mark.e2e
def test_a_stalled_consumer_stops_feeding_the_watchdog_and_shows_in_status_and_health(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    rig = IngestRig(broker, tmp_path, url, watchdog_usec=1_500_000, stall_after_s=1.0).start()
    try:
        assert rig.wait_stored(rig.genuine("door-2"))
        assert wait_for(lambda: ingest_health(rig.config).returncode == 0, 10)
        # Another program holds the store's write lock: nothing can be stored (transient: waited for).
        holder = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            stuck = rig.genuine("door-2")
            assert wait_for(lambda: any("STALLED" in s for s in rig.notify.statuses()), 15), rig.notify.statuses()
            quiet_from = time.monotonic()
            health = ingest_health(rig.config)
            assert health.returncode == 1 and "STALLED" in health.stdout, health
            time.sleep(2.0)
            assert rig.notify.times("WATCHDOG=1", since=quiet_from) == []
            assert rig.ingest.running()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The lock is gone: the waiting event is stored, the watchdog fed again.
        assert rig.wait_stored(stuck, 60), rig.ingest.log_text()
        moving = time.monotonic()
        rig.notify.wait_for("WATCHDOG=1", 10, since=moving)
        assert wait_for(lambda: ingest_health(rig.config).returncode == 0, 10)
        assert "stalled: nothing stored or acknowledged" in rig.ingest.log_text()
    finally:
        rig.close()


def test_health_says_not_running_when_no_service_writes_it(tmp_path):
    cfg = tmp_path / "ingest.toml"
    cfg.write_text(f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n')
    gone = ingest_health(cfg)
    assert gone.returncode == 1 and "has not run here" in gone.stdout
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "health.json").write_text(json.dumps(
        {"state": "ok", "checked_at": time.time() - 3600, "pid": 1}))
    stale = ingest_health(cfg)
    assert stale.returncode == 1 and "not running" in stale.stdout
