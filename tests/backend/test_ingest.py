"""``kiosk-ingest`` with real parts: Mosquitto, a simulated fleet (the real outbox and publisher), SQLite and PostgreSQL.

Every test ends by comparing what the producers' commits returned with what
the store holds: each committed event exactly once.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from harness.broker import MqttProbe
from harness.ingest_kit import REPO, IngestProcess, SimulatedSite, wait_for
from kiosk.backend.config import DEFAULT_INGEST_CONFIG, IngestConfig, load_ingest_config, parse_ingest_config
from kiosk.backend.store import open_store
from kiosk.errors import ConfigError
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import seal


def stored_ids(url: str) -> list[str]:
    with open_store(url) as s:
        return [k[2] for k in s.event_keys()]


def assert_exactly_once(url: str, committed: set[str], timeout: float = 60.0) -> None:
    assert committed
    assert wait_for(lambda: len(stored_ids(url)) >= len(committed), timeout), \
        f"{len(committed - set(stored_ids(url)))} committed events never stored"
    ids = stored_ids(url)
    assert len(ids) == len(set(ids)) == len(committed)
    assert set(ids) == committed


@pytest.mark.e2e
def test_ingest_stores_every_event_once_and_stops_cleanly(broker, tmp_path, store_url):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 3)
    ingest = IngestProcess(fleet.ingest_config(store_url), tmp_path / "ingest.log").start()
    try:
        assert ingest.wait_subscribed(), ingest.log_text()
        producers = [fleet.loadgen(d, "--events", "30", "--rate", "300", "--drain", "--timeout", "60")
                     for d in fleet.doors]
        assert all(p.wait() == 0 for p in producers), [p.stderr() for p in producers]
        assert_exactly_once(store_url, {e for p in producers for e in p.committed})
        with open_store(store_url) as s:
            first = next(iter(s.events()))
            assert first["site"] == fleet.site and first["received_at"] <= first["stored_at"]
            assert s.counts()["devices"] == 3
    finally:
        assert ingest.stop() == 0
    assert "ingest stopped: 90 events stored" in ingest.log_text()


@pytest.mark.e2e
def test_malformed_forged_and_replayed_messages_are_refused_recorded_and_nothing_stored(broker, tmp_path,
                                                                                     postgres_url):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2)
    ingest = IngestProcess(fleet.ingest_config(postgres_url), tmp_path / "ingest.log").start()
    door1, door2 = fleet.keys["door-1"], fleet.keys["door-2"]
    enc = fleet.backend.public().encryption
    topic = f"kiosk/{fleet.site}/door-1/events"

    def claims(device, seq, **kw):
        return {"event_id": f"0190-test-{device}-{seq}", "seq": seq, "site": fleet.site, "device": device,
                "type": "checkin", "outcome": "ACCEPTED", "resident_id": "resident-secret-77", "time": time.time(),
                "v": 1, **kw}

    genuine = seal(claims("door-1", 1), door1, enc)
    stranger = keymod.generate(f"{fleet.site}/door-1")  # the right name, a key the back end never saw
    bad = {
        "malformed": b"\x00not an envelope",
        "unknown_signer": seal(claims("door-1", 2), stranger, enc),
        "claims_mismatch": seal(claims("door-2", 3), door1, enc),  # door-1's key, door-2's words
        "topic_mismatch": seal(claims("door-2", 4), door2, enc),  # door-2's genuine event on door-1's topic
        "wrong_recipient": seal(claims("door-1", 5), door1, door2.public().encryption),
        "missing_claims": seal({k: v for k, v in claims("door-1", 6).items() if k != "seq"}, door1, enc),
    }
    try:
        assert ingest.wait_subscribed(), ingest.log_text()
        dev = MqttProbe(broker, fleet.cn("door-1"))
        assert dev.publish(topic, genuine) == 0
        for payload in bad.values():
            assert dev.publish(topic, payload) == 0
        assert dev.publish(topic, genuine) == 0  # replayed as it was
        assert dev.publish(topic, seal(claims("door-1", 1), door1, enc)) == 0  # replayed, sealed afresh
        dev.close()
        with open_store(postgres_url) as s:
            assert wait_for(lambda: s.counts()["refused"] >= len(bad) + 2, 20), s.refusals()
            assert [e["event_id"] for e in s.events()] == ["0190-test-door-1-1"]
            refused = s.refusals()
        reasons = sorted(r["reason"] for r in refused)
        assert reasons == sorted([*bad, "duplicate", "duplicate"])
        for r in refused:
            assert r["topic"] == topic and r["received_at"] > time.time() - 60
            assert "resident-secret-77" not in r["detail"]  # never the plaintext
        hashes = {r["payload_sha256"] for r in refused if r["reason"] != "duplicate"}
        assert hashlib.sha256(bad["malformed"]).hexdigest() in hashes
    finally:
        assert ingest.stop() == 0


@pytest.mark.fault
@pytest.mark.slow
def test_ingest_sigkilled_20_times_while_a_fleet_publishes(broker, tmp_path, postgres_url):
    """SIGKILL at random moments (mid-batch, mid-commit, before the acknowledgement): each event stored once."""
    seed = int(os.environ.get("KIOSK_FAULT_SEED", random.randrange(1 << 30)))
    print(f"KIOSK_FAULT_SEED={seed}")  # shown with a failure, whichever assertion it was
    rng = random.Random(seed)
    fleet = SimulatedSite(tmp_path / "fleet", broker, 4)
    cfg = fleet.ingest_config(postgres_url, batch_max=50)
    log = tmp_path / "ingest.log"
    ingest = IngestProcess(cfg, log).start()
    assert ingest.wait_subscribed(), ingest.log_text()
    producers = [fleet.loadgen(d, "--rate", "40") for d in fleet.doors]
    kills = 0
    try:
        for _ in range(22):
            time.sleep(rng.uniform(0.2, 1.5))
            ingest.kill()
            kills += 1
            mark = len(ingest.log_text())
            time.sleep(rng.uniform(0.0, 0.5))  # events pile up at the broker meanwhile
            ingest.start()
            assert ingest.wait_subscribed(mark), f"seed {seed}: {ingest.log_text()[-2000:]}"
    finally:
        for p in producers:
            p.proc.send_signal(signal.SIGTERM)
        for p in producers:
            p.wait(60)
    assert kills >= 20
    # What a producer's stop did not get out goes now, to the last ingest run.
    for d in fleet.doors:
        done = fleet.loadgen(d, "--events", "0", "--drain", "--timeout", "60")
        assert done.wait(120) == 0, done.stderr()
    committed = {e for p in producers for e in p.committed}
    try:
        assert_exactly_once(postgres_url, committed, timeout=90)
    finally:
        ingest.stop()
    with open_store(postgres_url) as s:
        dups = len([r for r in s.refusals() if r["reason"] == "duplicate"])
    print(f"seed {seed}: {kills} kills, {len(committed)} events stored once, {dups} redeliveries refused as duplicates")


@pytest.mark.fault
@pytest.mark.slow
def test_broker_and_postgresql_down_and_up_the_ingest_recovers_by_itself(broker, tmp_path, postgres_server):
    url = postgres_server.create_database()
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2)
    ingest = IngestProcess(fleet.ingest_config(url), tmp_path / "ingest.log").start()
    assert ingest.wait_subscribed(), ingest.log_text()
    pid = ingest.proc.pid
    producers = [fleet.loadgen(d, "--rate", "30") for d in fleet.doors]
    try:
        time.sleep(1.5)
        broker.stop()
        time.sleep(2.0)
        broker.start()
        time.sleep(1.5)
        postgres_server.stop()
        time.sleep(3.0)  # the ingest cannot store: it acknowledges nothing, and retries
        postgres_server.start()
        time.sleep(1.5)
    finally:
        if not postgres_server.running():
            postgres_server.start()
        for p in producers:
            p.proc.send_signal(signal.SIGTERM)
        for p in producers:
            p.wait(60)
    for d in fleet.doors:
        assert fleet.loadgen(d, "--events", "0", "--drain", "--timeout", "60").wait(120) == 0
    try:
        assert_exactly_once(url, {e for p in producers for e in p.committed}, timeout=90)
        assert ingest.running() and ingest.proc.pid == pid  # recovered without a restart
        text = ingest.log_text()
        assert "lost the store" in text or "cannot connect to the store" in text
        assert "handing on messages again" in text
    finally:
        assert ingest.stop() == 0


@pytest.mark.e2e
@pytest.mark.slow
def test_the_ingest_starts_under_a_large_backlog(broker, tmp_path):
    """The broker floods a resumed session right after CONNACK: the SUBACK must not wait behind that backlog."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2)
    cfg = fleet.ingest_config(url, connect_timeout=5.0)
    ingest = IngestProcess(cfg, tmp_path / "ingest.log").start()
    assert ingest.wait_subscribed(), ingest.log_text()
    assert ingest.stop() == 0  # away; the broker queues for its session
    producers = [fleet.loadgen(d, "--events", "1500", "--rate", "5000", "--drain", "--timeout", "120")
                 for d in fleet.doors]
    assert all(p.wait(300) == 0 for p in producers), [p.stderr() for p in producers]
    mark = len(ingest.log_text())
    ingest.start()
    try:
        assert ingest.wait_subscribed(mark), ingest.log_text()[mark:]
        assert_exactly_once(url, {e for p in producers for e in p.committed}, timeout=120)
        assert "broker unavailable" not in ingest.log_text()[mark:]
    finally:
        assert ingest.stop() == 0


@pytest.mark.e2e
def test_events_past_the_retention_period_are_deleted_by_the_ingest(broker, tmp_path):
    from kiosk.backend.store import Incoming

    url = f"sqlite:///{tmp_path / 'events.db'}"
    now = time.time()
    with open_store(url) as s:
        s.store_batch([Incoming({"event_id": f"old-{i}", "seq": i, "site": "elm-court", "device": "door-1",
                                 "type": "checkin", "resident_id": "r-1", "time": now - (40 + i) * 86400}, now)
                       for i in range(5)]
                      + [Incoming({"event_id": "new", "seq": 9, "site": "elm-court", "device": "door-1",
                                   "type": "checkin", "resident_id": "r-1", "time": now - 86400}, now)])
    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)
    ingest = IngestProcess(fleet.ingest_config(url, retention_days=30), tmp_path / "ingest.log").start()
    try:
        assert ingest.wait_subscribed(), ingest.log_text()
        assert wait_for(lambda: "deleted 5 events" in ingest.log_text(), 20)
        assert stored_ids(url) == ["new"]
    finally:
        assert ingest.stop() == 0


def test_validate_config(tmp_path, broker):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)
    cfg = fleet.ingest_config(f"sqlite:///{tmp_path / 'e.db'}")

    def run(path):
        return subprocess.run([sys.executable, "-m", "kiosk.backend.ingest", "--config", str(path), "--validate-config"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)

    ok = run(cfg)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("[store]", "[store]\nretension_days = 3"))
    r = run(bad)
    assert r.returncode == 78 and "store.retension_days: unknown key" in r.stderr and f"{bad}:" in r.stderr
    nokey = tmp_path / "nokey.toml"
    nokey.write_text(cfg.read_text().replace(str(fleet.backend_key), str(tmp_path / "missing.jwks")))
    r = run(nokey)
    assert r.returncode == 78 and "missing.jwks" in r.stderr


def test_every_setting_is_documented_in_config_ingest_toml():
    text = DEFAULT_INGEST_CONFIG.read_text()
    shipped = load_ingest_config(DEFAULT_INGEST_CONFIG)
    assert shipped == IngestConfig()  # the file shows the defaults
    for section, model in IngestConfig.model_fields.items():
        assert f"[{section}]" in text, section
        for key in model.annotation.model_fields:
            assert f"\n{key} = " in text, f"{section}.{key} is not documented in config/ingest.toml"
    with pytest.raises(ConfigError, match="ingest.batch_max"):
        parse_ingest_config("[ingest]\nbatch_max = 0\n", "x.toml")
    with pytest.raises(ConfigError, match="plain mqtt"):
        parse_ingest_config('[broker]\nurl = "mqtt://broker.example.org:1883"\n')


def test_kiosk_ingest_options_all_have_help():
    from kiosk.backend.ingest import build_parser

    parser = build_parser()
    assert parser.description
    for action in parser._actions:
        assert action.help, f"kiosk-ingest {action.option_strings}: undocumented"
