"""The publisher against a real Mosquitto: TLS with client certificates, ACL, QoS 1, status, last will."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from harness.broker import Pki, TcpProxy
from kiosk.config import OutboxSettings
from kiosk.db import open_database
from kiosk.errors import ConfigError, KeyFileError
from kiosk.match.decide import Decision, Outcome
from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.mqtt import tls_files
from kiosk.sync.events.publisher import Publisher
from outbox_kit import CN, DEVICE, SITE, decision, outbox, wait_for  # noqa: F401


@pytest.fixture
def received(broker, backend_keys, device_keys):
    """Verified events arriving at the back end, in arrival order."""
    events: list = []
    invalid: list = []
    settings = broker.settings("backend")
    c = EventConsumer(
        settings, tls_files(settings), backend_keys, keymod.KeyRing([device_keys]),
        on_event=events.append, on_invalid=invalid.append, client_id="test-backend",
        session_expiry=300,  # the broker keeps the subscription, and queues, across its restarts
    )
    c.start()
    yield events
    c.close()
    assert not invalid


def test_publishes_in_sequence_order_and_marks_delivered_on_puback(broker, outbox, device_keys, backend_keys, received):
    committed = [outbox.commit(decision(i), gallery_version=4, model_id="m1") for i in range(30)]
    with Publisher(outbox, broker.settings(CN, inflight=5), device_keys, backend_keys.public()) as pub:
        assert wait_for(lambda: outbox.depth() == 0)
        for i in range(30, 40):  # committed while connected: woken by the commit
            committed.append(outbox.commit(decision(i)))
        assert wait_for(lambda: outbox.depth() == 0 and len(received) == 40)
        assert pub.health()["delivered"] == 40 and pub.health()["connected"]
        assert 1 < pub.peak_inflight <= 5
    assert [e.claims["seq"] for e in received] == [c.seq for c in committed]
    assert [e.claims["event_id"] for e in received] == [c.event_id for c in committed]
    assert received[0].claims["gallery_version"] == 4 and received[0].claims["model_id"] == "m1"
    assert all(e.topic == f"kiosk/{SITE}/{DEVICE}/events" for e in received)
    assert all(c.delivered_at is not None for c in outbox.all())


def test_status_is_retained_with_outbox_depth_and_offline_on_stop(broker, outbox, device_keys, backend_keys, mqtt_probe,
                                                                  received):
    for i in range(3):
        outbox.commit(decision(i))
    versions = {"versions": {"software": "0.1.0", "gallery": 4}, "location": "at_site"}
    pub = Publisher(outbox, broker.settings(CN, status_interval=1.0), device_keys, backend_keys.public(),
                    status_provider=lambda: versions)
    pub.start()
    try:
        assert wait_for(lambda: outbox.depth() == 0)
        watcher = mqtt_probe("backend")
        watcher.subscribe(f"kiosk/{SITE}/{DEVICE}/status")

        def latest():
            said = [json.loads(p) for t, p, _ in watcher.messages if t.endswith("/status")]
            return said[-1] if said else None

        # The next periodic status (every second) tells the drained depth.
        assert wait_for(lambda: (latest() or {}).get("outbox", {}).get("depth") == 0, 10)
        status = latest()
        assert status["state"] == "online" and status["device"] == DEVICE and status["site"] == SITE
        assert status["outbox"]["depth"] == 0 and status["outbox"]["oldest_undelivered_age_s"] is None
        assert status["outbox"]["dropped"] == 0 and status["outbox"]["alarm"] is None
        assert status["versions"] == {"software": "0.1.0", "gallery": 4} and status["location"] == "at_site"
    finally:
        assert pub.stop(5)
    pub.close()
    pub.close()  # safe twice
    status = mqtt_probe("backend").retained(f"kiosk/{SITE}/{DEVICE}/status")
    assert status["state"] == "offline" and status["reason"] == "stopped"


def test_last_will_marks_the_device_offline_when_the_link_dies(broker, outbox, device_keys, backend_keys, mqtt_probe):
    proxy = TcpProxy(broker.host, broker.port)
    settings = broker.settings(CN, url=proxy.url, keepalive=2)
    watcher = mqtt_probe("backend")
    watcher.subscribe(f"kiosk/{SITE}/{DEVICE}/status")
    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        assert wait_for(lambda: pub.connected)
        assert wait_for(lambda: any(b'"online"' in p for _, p, _ in watcher.messages))
        proxy.block()  # the link dies; the broker notices and sends the will
        assert wait_for(lambda: any(b'"connection lost"' in p for _, p, _ in watcher.messages), timeout=10)
        assert wait_for(lambda: not pub.connected)
        proxy.restore()
        assert wait_for(lambda: pub.connected, timeout=10)  # reconnects by itself
    proxy.close()


def test_broker_refuses_another_devices_topic_and_nothing_is_marked(broker, tmp_path, device_keys, backend_keys, mqtt_probe):
    # The ACL at work, seen by a plain client: its own topic yes, another device's no.
    t1 = mqtt_probe(CN)
    assert t1.connected
    assert t1.publish(f"kiosk/{SITE}/{DEVICE}/events", b"x") < 0x80
    assert t1.publish(f"kiosk/{SITE}/kiosk-t2/events", b"x") == 0x87  # not authorized
    # A publisher whose certificate is kiosk-t1's but whose outbox is kiosk-t2's.
    db = open_database(tmp_path / "t2.db")
    outbox = Outbox(db, site=SITE, device="kiosk-t2")
    for i in range(3):
        outbox.commit(decision(i))
    t2_keys = keymod.generate(f"{SITE}/kiosk-t2")
    with Publisher(outbox, broker.settings(CN), t2_keys, backend_keys.public()) as pub:
        assert wait_for(lambda: pub.last_error is not None and "not authorized" in pub.last_error.lower(), timeout=10)
        time.sleep(0.5)
        assert outbox.depth() == 3  # refused events stay in the outbox
        assert pub.refused >= 1 and pub.health()["delivered"] == 0
    db.close()


def test_client_without_certificate_is_refused(broker, outbox, device_keys, backend_keys, mqtt_probe, tmp_path):
    anonymous = mqtt_probe(None, timeout=3)
    assert anonymous.connack is None and not anonymous.connected
    # A certificate from a CA the broker does not trust fares no better.
    rogue = Pki(tmp_path / "rogue")
    cert, key = rogue.client(CN)
    settings = broker.settings(CN, client_cert=cert, client_key=key, connect_timeout=2.0)
    outbox.commit(decision(0))
    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        assert wait_for(lambda: pub.last_error is not None, timeout=8)
        assert "CONNACK" in pub.last_error or "certificate" in pub.last_error
        assert not pub.connected and pub.connections == 0
    assert outbox.depth() == 1
    assert "did not return a certificate" in broker.log_text() or "certificate" in broker.log_text()


def test_bad_tls_files_fail_at_construction(broker, outbox, device_keys, backend_keys, tmp_path):
    cert, key = broker.pki.client(CN)
    loose = tmp_path / "loose.key"
    loose.write_bytes(key.read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(KeyFileError, match="accessible by others"):
        Publisher(outbox, broker.settings(CN, client_key=loose), device_keys, backend_keys.public())
    with pytest.raises(ConfigError, match="ca_file"):
        Publisher(outbox, broker.settings(CN, ca_file=tmp_path / "nope.pem"), device_keys, backend_keys.public())
    with pytest.raises(KeyFileError):
        Publisher(outbox, broker.settings(CN), device_keys.public(), backend_keys.public())


def test_broker_down_then_up_backs_off_and_delivers(broker, outbox, device_keys, backend_keys, received):
    broker.stop()
    settings = broker.settings(CN, reconnect_backoff_initial=0.2, reconnect_backoff_max=0.8)
    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        for i in range(5):
            outbox.commit(decision(i))
        assert wait_for(lambda: pub.last_error is not None and "cannot connect" in pub.last_error)
        time.sleep(1.0)
        assert outbox.depth() == 5
        broker.start()
        assert wait_for(lambda: outbox.depth() == 0, timeout=10)
    assert wait_for(lambda: len(received) == 5)


def test_stop_ends_threads(broker, outbox, device_keys, backend_keys):
    before = {t.name for t in threading.enumerate()}
    pub = Publisher(outbox, broker.settings(CN), device_keys, backend_keys.public())
    pub.start()
    assert "publisher" in {t.name for t in threading.enumerate()}
    assert wait_for(lambda: pub.connected)
    assert pub.stop(5)
    pub.close()
    assert wait_for(lambda: {t.name for t in threading.enumerate()} <= before, timeout=3)
    with pytest.raises(RuntimeError):
        pub.start()


def test_outbox_alarm_and_drops_show_in_the_status(broker, tmp_path, device_keys, backend_keys, mqtt_probe, received):
    db = open_database(tmp_path / "full.db")
    db.execute("PRAGMA synchronous=OFF")  # hundreds of commits; durability is not what is tested here
    outbox = Outbox(db, site=SITE, device=DEVICE, settings=OutboxSettings(disk_budget_mb=0.3, when_full="drop_oldest"))
    broker.stop()  # offline: the outbox fills up
    for i in range(700):
        outbox.commit(Decision(Outcome.UNKNOWN, i))
    assert outbox.dropped() > 0 and outbox.alarm
    broker.start()
    with Publisher(outbox, broker.settings(CN), device_keys, backend_keys.public()) as pub:
        assert pub.wait_drained(20)
        status = mqtt_probe("backend").retained(f"kiosk/{SITE}/{DEVICE}/status")
    assert status["outbox"]["alarm"] == outbox.alarm and "drop_oldest" in status["outbox"]["alarm"]
    assert status["outbox"]["dropped"] == outbox.dropped()
    db.close()


def test_mqtt_settings_are_checked():
    from kiosk.config import parse_config

    cfg = parse_config('[mqtt]\nurl = "mqtts://broker.example.org"\n')
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("broker.example.org", 8883, True)
    local = parse_config('[mqtt]\nurl = "mqtt://127.0.0.1:1884"\n').mqtt
    assert (local.port, local.tls) == (1884, False)
    for bad, what in [
        ('url = "mqtt://broker.example.org"', "only allowed to a broker on this device"),
        ('url = "http://x"', "mqtt.url"),
        ("inflight = 0", "mqtt.inflight"),
        ("reconnect_backoff_initial = 10.0\nreconnect_backoff_max = 1.0", "reconnect_backoff_max"),
        ('topic_prefix = "a/+/b"', "mqtt.topic_prefix"),
        ("tls = true", "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=what.replace("+", r"\+")):
            parse_config(f"[mqtt]\n{bad}\n")
    with pytest.raises(ConfigError, match="when_full"):
        parse_config('[outbox]\nwhen_full = "shrug"\n')


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_network_thread_ended_by_a_callback_is_replaced(broker, outbox, device_keys, backend_keys, received,
                                                          caplog):
    """An exception in one of paho's callbacks ends its thread with no on_disconnect: the door would have waited
    for PUBACKs that nobody reads, offline for good. The link sees the thread gone and connects again."""
    with Publisher(outbox, broker.settings(CN), device_keys, backend_keys.public()) as pub:
        assert wait_for(lambda: pub.connected)
        before = pub.connections

        def broken(client, userdata, mid, rc, props):
            raise RuntimeError("a bug in a callback")

        pub._client.on_publish = broken
        network = pub._client._thread
        outbox.commit(decision(1))
        assert wait_for(lambda: pub.connections > before and pub.connected, timeout=15)
        network.join(5)  # its exception reported within this test
        assert any("network thread of the connection" in r.getMessage() for r in caplog.records)
        assert wait_for(lambda: outbox.depth() == 0 and len(received) == 1, timeout=15)
