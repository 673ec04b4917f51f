"""IPv6 brokers: ``mqtts://[fd00::1]:8883`` is taken, and the kiosk talks TLS to a real Mosquitto on ``::1``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import time

import pytest

from harness.broker import MOSQUITTO, Broker, Pki
from fleet import fleet  # noqa: F401
from kiosk.config import MqttSettings, OutboxSettings, parse_config
from kiosk.db import open_database
from kiosk.errors import ConfigError
from kiosk.match.decide import Decision, Outcome
from kiosk.selftest import FAIL, OK, Context, run_checks
from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.events.publisher import Publisher
from kiosk.sync.mqtt import tls_files
from harness.polling import wait_for

SITE, DEVICE = "test-site", "kiosk-t1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")


@pytest.mark.parametrize("url, host, port, address", [
    ("mqtts://[fd00::1]:8883", "fd00::1", 8883, "[fd00::1]:8883"),
    ("mqtts://[fd00::1]", "fd00::1", 8883, "[fd00::1]:8883"),
    ("mqtts://[2001:db8::10]:18883/", "2001:db8::10", 18883, "[2001:db8::10]:18883"),
    ("mqtts://[::ffff:192.0.2.1]:8883", "::ffff:192.0.2.1", 8883, "[::ffff:192.0.2.1]:8883"),
    ("mqtt://[::1]:1883", "::1", 1883, "[::1]:1883"),  # plain MQTT to a bridge on this device
    ("mqtts://broker.example.org:8884", "broker.example.org", 8884, "broker.example.org:8884"),
    ("mqtt://127.0.0.1", "127.0.0.1", 1883, "127.0.0.1:1883"),
])
def test_broker_urls_with_ipv6_addresses_are_taken(url, host, port, address):
    m = parse_config(f'[mqtt]\nurl = "{url}"\n').mqtt
    assert (m.host, m.port, m.address) == (host, port, address)


@pytest.mark.parametrize("url, where, what", [
    ("mqtts://fd00::1:8883", "kiosk.toml:4: mqtt.url", "should match pattern"),  # an IPv6 address needs its brackets
    ("mqtts://[fd00::zz]:8883", "kiosk.toml:4: mqtt.url", "should match pattern"),
    ("mqtts://[fd00:::1]:8883", "kiosk.toml:4: mqtt.url", r"\[fd00:::1\] is not an IPv6 address"),
    ("mqtts://[192.0.2.1]:8883", "kiosk.toml:4: mqtt.url", "is not an IPv6 address"),
    ("mqtts://[fd00::1]:99999", "kiosk.toml:3: mqtt", "port must be"),
    ("mqtt://[fd00::1]:1883", "kiosk.toml:3: mqtt", "only allowed to a broker on this device"),
])
def test_malformed_ipv6_broker_urls_are_refused_naming_key_and_line(url, where, what):
    with pytest.raises(ConfigError, match=what) as e:
        parse_config(f'[logging]\nlevel = "INFO"\n[mqtt]\nurl = "{url}"\n', "kiosk.toml")
    assert where in str(e.value)


def test_a_provisioning_code_may_name_an_ipv6_broker(fleet, state_dir):
    from kiosk.provisioning.startup import provisioned_config
    from kiosk.provisioning.store import ProvisioningStore

    ProvisioningStore(fleet.config(state_dir)).install(fleet.code(broker_url="mqtts://[fd00::1]:8883"))
    cfg, _, _ = provisioned_config(fleet.config(state_dir))
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("fd00::1", 8883)


@pytest.fixture
def broker6(tmp_path, broker_pki):
    """Mosquitto listening on the IPv6 loopback only (TLS, client certificates)."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (scripts/bootstrap installs it)")
    b = Broker(tmp_path / "mosquitto6", broker_pki, host="::1")
    b.start()
    yield b
    b.kill()


@needs_ipv6
def test_events_reach_a_broker_on_ipv6_loopback(broker6, tmp_path):
    """The broker listens on ::1 only: an event that arrives went over IPv6, TLS checked against ::1."""
    assert broker6.url.startswith("mqtts://[::1]:")
    device, backend = keymod.generate(f"{SITE}/{DEVICE}"), keymod.generate("backend")
    received: list = []
    settings = broker6.settings("backend")
    consumer = EventConsumer(settings, tls_files(settings), backend, keymod.KeyRing([device]),
                             on_event=received.append, client_id="test-backend6")
    consumer.start()
    db = open_database(tmp_path / "kiosk.db")
    outbox = Outbox(db, site=SITE, device=DEVICE, settings=OutboxSettings())
    try:
        ev = outbox.commit(Decision(Outcome.ACCEPTED, 1, resident_id="r-1", distance=0.3, margin=0.1, frames=3))
        with Publisher(outbox, broker6.settings(f"{SITE}/{DEVICE}"), device, backend.public()):
            assert wait_for(lambda: outbox.depth() == 0 and len(received) == 1), broker6.log_tail()
    finally:
        consumer.close()
        db.close()
    assert received[0].claims["event_id"] == ev.event_id


@needs_ipv6
def test_selftest_connects_to_an_ipv6_broker(config, broker6):
    cfg = config.model_copy(update={"mqtt": broker6.settings(f"{config.device.site}/{config.device.device_id}")})
    (r,) = run_checks(Context(cfg), ["broker"])
    assert r.status == OK, r.detail
    assert f"connected to [::1]:{broker6.port} over TLS (TLSv1." in r.detail


@needs_ipv6
def test_the_tls_server_name_is_the_ipv6_address(config, tmp_path, broker_pki):
    """A broker whose certificate names 127.0.0.1 but not ::1 is refused at [::1]: the address is checked."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pki = Pki(tmp_path / "pki4")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(pki._ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(pki._ca_key, hashes.SHA256())
    )
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    b = Broker(tmp_path / "mosquitto-v4name", pki, host="::1")
    b.start()
    try:
        cfg = config.model_copy(update={"mqtt": b.settings(f"{config.device.site}/{config.device.device_id}")})
        (r,) = run_checks(Context(cfg, broker_timeout=3), ["broker"])
    finally:
        b.kill()
    assert r.status == FAIL and "certificate" in r.detail.lower() and "[::1]" in r.detail, r.detail


def test_mqtt_settings_address_keeps_names_as_they_are():
    assert MqttSettings(url="mqtts://localhost").address == "localhost:8883"
