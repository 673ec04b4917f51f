"""docs/broker.md works as printed: Mosquitto started with its mosquitto.conf and ACL, verbatim.

The end-to-end path (a kiosk publishes, ``kiosk-ingest`` stores) runs over
that broker, and the cross-site attack of the security review (finding 3)
is replayed over it: a door of one site tries to write another site's
status, acks and events, and the broker refuses each.
"""

from __future__ import annotations

import json
import shutil

import pytest

from harness.broker import Broker, MqttProbe, device_cn
from harness.docs import docs_snippet
from harness.ingest_kit import IngestProcess, SimulatedSite
from kiosk.backend.store import open_store
from harness.polling import wait_for


pytestmark = pytest.mark.e2e

NOT_AUTHORIZED = 0x87


@pytest.fixture
def docs_broker(broker_pki):
    b = Broker.from_docs(broker_pki)
    b.start()
    yield b
    b.kill()
    shutil.rmtree(b.dir, ignore_errors=True)


def test_the_pages_files_are_used_verbatim(docs_broker):
    conf = docs_broker.conf_path.read_text()
    for line in docs_snippet("broker-mosquitto-conf").splitlines():
        if "/etc/mosquitto/" not in line and "/var/lib/mosquitto/" not in line and "listener" not in line:
            assert line in conf.splitlines()
    assert docs_broker.acl_path.read_text() == docs_snippet("broker-acl")
    assert "user mosquitto" in conf and "user root" not in conf


def test_a_message_over_the_brokers_limit_is_refused_and_its_sender_cut_off(docs_broker):
    """max_packet_size: a gallery update's frame (256 kB) passes; 2 MB from a door's certificate are refused, and its
    connection with them, before they take the broker's memory."""
    door = MqttProbe(docs_broker, device_cn("elm-court", "door-1"))
    assert door.publish("kiosk/elm-court/door-1/events", b"x" * 262_144) < 0x80
    assert door.publish("kiosk/elm-court/door-1/events", b"x" * 2_000_000) is None
    # on_disconnect, however paho learns of it: a write that fails, or the broker's DISCONNECT (0x95) read first,
    # after which paho's is_connected() still says True.
    assert door.disconnected.wait(5)
    again = MqttProbe(docs_broker, device_cn("elm-court", "door-1"))
    assert again.publish("kiosk/elm-court/door-1/events", b"after") < 0x80


def test_a_door_of_one_site_cannot_write_another_sites_topics(docs_broker):
    """Finding 3: with the certificate naming only the device, oak-park's door-1 could write elm-court's door-1."""
    real = MqttProbe(docs_broker, device_cn("elm-court", "door-1"))
    assert real.connected
    status = json.dumps({"state": "online", "gallery": {"version": 7, "digest": "genuine"}})
    assert real.publish("kiosk/elm-court/door-1/status", status, retain=True) < 0x80
    assert real.publish("kiosk/elm-court/door-1/ack", b"genuine-ack", retain=True) < 0x80
    intruder = MqttProbe(docs_broker, device_cn("oak-park", "door-1"))
    assert intruder.connected
    forged = json.dumps({"state": "online", "gallery": {"version": 99, "digest": "forged"}})
    assert intruder.publish("kiosk/elm-court/door-1/status", forged, retain=True) == NOT_AUTHORIZED
    assert intruder.publish("kiosk/elm-court/door-1/ack", b"forged-ack", retain=True) == NOT_AUTHORIZED
    assert intruder.publish("kiosk/elm-court/door-1/events", b"x") == NOT_AUTHORIZED
    assert intruder.publish("kiosk/elm-court/gallery", b"x") == NOT_AUTHORIZED
    # Its own topics it may write (no one subscribed: reason 16, not a refusal).
    assert intruder.publish("kiosk/oak-park/door-1/events", b"x") < 0x80
    # Nor does it get what is sent to the other door's own gallery topic (Mosquitto grants the
    # subscription and then delivers nothing it may not read).
    intruder.subscribe("kiosk/elm-court/door-1/gallery/#")
    real.subscribe("kiosk/elm-court/door-1/gallery/#")
    backend = MqttProbe(docs_broker, "backend")
    assert backend.publish("kiosk/elm-court/door-1/gallery", b"snapshot") == 0  # someone took it: the real door
    assert wait_for(lambda: any(t.endswith("/gallery") for t, _, _ in real.messages), 5)
    assert not [t for t, _, _ in intruder.messages if "gallery" in t]
    # The genuine retained messages are untouched.
    assert backend.retained("kiosk/elm-court/door-1/status")["gallery"]["digest"] == "genuine"
    backend.subscribe("kiosk/elm-court/door-1/ack")
    assert wait_for(lambda: any(t.endswith("/ack") for t, _, _ in backend.messages), 5)
    assert [p for t, p, _ in backend.messages if t.endswith("/ack")] == [b"genuine-ack"]
    for p in (real, intruder, backend):
        p.close()


def test_the_console_publishes_gallery_updates_and_reads_status_and_acks_but_no_events(docs_broker):
    door = MqttProbe(docs_broker, device_cn("elm-court", "door-1"))
    assert door.publish("kiosk/elm-court/door-1/status", json.dumps({"state": "online"}), retain=True) < 0x80
    assert door.publish("kiosk/elm-court/door-1/ack", b"signed-ack", retain=True) < 0x80
    door.subscribe("kiosk/elm-court/door-1/gallery/#")
    door.subscribe("kiosk/elm-court/gallery/#")
    console = MqttProbe(docs_broker, "console")
    assert console.connected
    assert console.retained("kiosk/elm-court/door-1/status")["state"] == "online"
    console.subscribe("kiosk/elm-court/+/ack")
    console.subscribe("kiosk/elm-court/+/events")
    assert wait_for(lambda: any(t.endswith("/ack") for t, _, _ in console.messages), 5)
    assert console.publish("kiosk/elm-court/door-1/gallery", b"update") == 0  # the door took it
    assert console.publish("kiosk/elm-court/gallery", b"update") < 0x80
    assert wait_for(lambda: len([t for t, _, _ in door.messages if "gallery" in t]) == 2, 5)
    for topic in ("kiosk/elm-court/door-1/status", "kiosk/elm-court/door-1/ack", "kiosk/elm-court/door-1/events"):
        assert console.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    # An event, then a status: the console gets the status and never the event before it.
    assert door.publish("kiosk/elm-court/door-1/events", b"an event") < 0x80
    assert door.publish("kiosk/elm-court/door-1/status", json.dumps({"state": "offline"}), retain=True) < 0x80
    assert wait_for(lambda: any(p == b'{"state": "offline"}' for _, p, _ in console.messages), 5)
    assert not [t for t, _, _ in console.messages if t.endswith("/events")]
    for p in (door, console):
        p.close()


#: The ACL the docs printed before (a door's certificate named the device alone).
OLD_ACL = """\
pattern write kiosk/+/%u/events
pattern readwrite kiosk/+/%u/status
pattern read kiosk/+/%u/gallery/#
pattern read kiosk/+/gallery/#
pattern write kiosk/+/%u/ack
user backend
topic read kiosk/#
"""


def test_the_attack_went_through_with_the_old_acl(tmp_path, broker_pki):
    """The same attack against the ACL and identities the docs used to print: it succeeds (what the fix stops)."""
    old = Broker(tmp_path / "old", broker_pki, acl=OLD_ACL).start()
    try:
        intruder = MqttProbe(old, "door-1")  # oak-park's door-1, certificate CN = device id
        assert intruder.publish("kiosk/elm-court/door-1/status", b"{}", retain=True) < 0x80
        assert intruder.publish("kiosk/elm-court/door-1/ack", b"forged-ack", retain=True) < 0x80
        intruder.close()
    finally:
        old.kill()


def test_a_certificate_naming_the_device_alone_gets_nothing(docs_broker):
    legacy = MqttProbe(docs_broker, "door-1")  # the old way: CN = device id
    assert legacy.connected
    assert legacy.publish("kiosk/elm-court/door-1/events", b"x") == NOT_AUTHORIZED
    assert legacy.publish("kiosk/elm-court/door-1/status", b"x", retain=True) == NOT_AUTHORIZED
    legacy.close()


def test_mosquitto_denies_identities_with_wildcards(docs_broker):
    # Substituted into "kiosk/%u/events", "elm-court/+" would match every door of the site:
    # Mosquitto denies any pattern rule to such a user name.
    odd = MqttProbe(docs_broker, "elm-court/+")
    assert odd.connected
    assert odd.publish("kiosk/elm-court/door-1/events", b"x") == NOT_AUTHORIZED
    odd.close()


@pytest.mark.slow
def test_kiosks_publish_and_the_ingest_stores_over_the_documented_broker(docs_broker, tmp_path):
    fleet = SimulatedSite(tmp_path / "fleet", docs_broker, 2)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    ingest = IngestProcess(fleet.ingest_config(url), tmp_path / "ingest.log").start()
    try:
        assert ingest.wait_subscribed(), ingest.log_text()
        producers = [fleet.loadgen(d, "--events", "20", "--rate", "200", "--drain", "--timeout", "60")
                     for d in fleet.doors]
        assert all(p.wait() == 0 for p in producers), [p.stderr() for p in producers]
        committed = {e for p in producers for e in p.committed}
        with open_store(url) as store:
            assert wait_for(lambda: store.counts()["events"] >= 40, 30)
            assert {k[2] for k in store.event_keys()} == committed and store.counts()["events"] == 40
    finally:
        assert ingest.stop() == 0
