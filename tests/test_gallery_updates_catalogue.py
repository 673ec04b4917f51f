"""A catalogue of bad gallery updates, each sent to a running kiosk over a real Mosquitto.

One daemon (:class:`kiosk.daemon.Kiosk`, MQTT on, a live camera showing an
empty scene) serves the whole module. Each bad update is published by the
back end's client; each must be answered on ``…/ack`` with ``refused`` and
the expected reason, leave the gallery (version, hash, the searched object,
the rows) exactly as it was, and leave the daemon running.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time

import numpy as np
import pytest
from jwcrypto import jws

from broker import Broker, MqttProbe
from gallery_kit import Admin, World, b64url, device_state, device_toml, encrypt_raw, erase_op, frame, vectors
from kiosk.capture.replay import ReplaySource
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.match.gallery import Resident, open_store
from kiosk.sync import keys as keymod
from kiosk.sync.updates.format import verify_ack

pytestmark = pytest.mark.e2e

SITE, DEVICE = "elm-court", "door-1"
MAX_MESSAGE = 65536


class Site:
    """The running device, the admin and the back end's MQTT client, driven by the tests."""

    def __init__(self, broker: Broker, root):
        self.admin = Admin()
        self.state, self.keys = device_state(root / "state", SITE, DEVICE, self.admin.keys.public())
        self.config = parse_config(device_toml(self.state, SITE, DEVICE, broker,
                                               f"[liveness]\nenabled = false\n[gallery]\npart_timeout_s = 1.5\n"
                                               f"max_message_bytes = {MAX_MESSAGE}\n"))
        self.world = World()
        self.rng = np.random.default_rng(2024)
        source = ReplaySource([np.zeros((240, 320, 3), np.uint8)], live=True, loop=True, fps=10.0)
        self.kiosk = Kiosk(self.config, source=source)
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()
        self.probe = MqttProbe(broker, "backend")
        self.ack_topic = f"kiosk/{SITE}/{DEVICE}/ack"
        self.status_topic = f"kiosk/{SITE}/{DEVICE}/status"
        self.site_topic = f"kiosk/{SITE}/gallery"
        self.device_topic = f"kiosk/{SITE}/{DEVICE}/gallery"
        self.probe.subscribe(self.ack_topic)
        self.probe.subscribe(self.status_topic)
        self.ring = keymod.KeyRing([self.keys.public()])

    @property
    def sync(self):
        return self.kiosk.gallery_sync

    @property
    def version(self) -> int:
        return self.sync.version

    def acks(self) -> list[bytes]:
        return [p for t, p, _ in self.probe.messages if t == self.ack_topic]

    def send(self, frames: list[bytes], topic: str | None = None, timeout: float = 15.0) -> dict:
        """Publish ``frames`` as the back end and return the device's next ack (verified)."""
        n = len(self.acks())
        for f in frames:
            assert self.probe.publish(topic or self.site_topic, f) == 0
        deadline = time.monotonic() + timeout
        while len(self.acks()) <= n and time.monotonic() < deadline:
            self.probe.wait_messages(len(self.probe.messages) + 1, timeout=0.2)
        assert len(self.acks()) > n, "the device did not answer"
        return verify_ack(self.acks()[n], self.ring)

    def snapshot(self):
        """What must not change on a refusal."""
        store = open_store(self.config)
        try:
            rows = store.db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
            return (self.sync.version, self.sync.digest, id(self.kiosk.recognizer.gallery), store.digest(),
                    store.version(), rows)
        finally:
            store.db.close()

    def claims(self, *, ops=None, version=None, base=None, world=None, **kw) -> dict:
        """A valid delta on the held version (one new resident unless ``ops``), without changing the world."""
        w = copy.deepcopy(world or self.world)
        if ops is None:
            rid = f"R-{len(w.residents) + 100:04d}"
            w.put(Resident(rid, f"Name {rid}"), vectors(self.rng, 1))
            ops = w.upserts([rid])
        v = self.version
        return self.admin.claims(w, site=SITE, version=version or v + 1, base=v if base is None else base, ops=ops, **kw)

    def frames(self, claims: dict, *devices) -> list[bytes]:
        return self.admin.frames(claims, *(devices or (self.keys,)), max_bytes=MAX_MESSAGE)

    def apply_good(self, n: int = 1) -> dict:
        """Enroll ``n`` new residents with a valid delta; the world follows."""
        ids = []
        for _ in range(n):
            rid = f"R-{len(self.world.residents) + 100:04d}"
            self.world.put(Resident(rid, f"Name {rid}"), vectors(self.rng, 2))
            ids.append(rid)
        v = self.version
        claims = self.admin.claims(self.world, site=SITE, version=v + 1, base=v, ops=self.world.upserts(ids))
        ack = self.send(self.frames(claims))
        assert ack["result"] == "applied" and ack["digest"] == self.world.digest(), ack
        return claims

    def alive(self) -> bool:
        return self.runner.is_alive() and self.sync.alive and self.kiosk.capture.healthy

    def close(self) -> None:
        self.probe.close()
        self.kiosk.request_stop()
        self.runner.join(10)
        self.kiosk.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory, broker_pki):
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), broker_pki).start()
    s = Site(broker, tmp_path_factory.mktemp("site"))
    try:
        s.apply_good(3)  # connected, subscribed, a gallery to keep intact
        yield s
    finally:
        s.close()
        broker.kill()


def refused(site: Site, frames: list[bytes], reason: str, topic: str | None = None) -> dict:
    before = site.snapshot()
    ack = site.send(frames, topic)
    assert (ack["result"], ack["reason"]) == ("refused", reason), ack
    assert ack["detail"] and ack["detail"].startswith(reason)  # a reason a person can read
    assert (ack["version"], ack["digest"]) == (before[0], before[1]) == (site.version, site.world.digest())
    assert site.snapshot() == before, "the gallery changed"
    assert site.alive(), "the daemon stopped"
    return ack


def jws_parts(site: Site, claims: dict) -> list[str]:
    signed = jws.JWS(json.dumps(claims).encode())
    key = site.admin.keys.signing
    signed.add_signature(key, alg="Ed25519", protected=json.dumps({"alg": "Ed25519", "kid": key.get("kid"),
                                                                   "typ": "kiosk-gallery+jwt"}))
    return signed.serialize(compact=True).split(".")


def jwe_of(site: Site, claims: dict) -> dict:
    return json.loads(site.admin.seal(claims, site.keys))


def reframe(obj) -> list[bytes]:
    return [frame(obj if isinstance(obj, str) else json.dumps(obj))]


def flip(text: str, at: int) -> str:
    c = "A" if text[at] != "A" else "B"
    return text[:at] + c + text[at + 1 :]


# -- the catalogue ------------------------------------------------------------------------------


def test_not_json(site):
    refused(site, [b"\x00\x01 this is not JSON"], "malformed")


def test_frame_of_the_wrong_shape(site):
    refused(site, [json.dumps({"v": 1, "part": 0, "parts": 1}).encode()], "malformed")


def test_frame_holding_something_other_than_a_jwe(site):
    refused(site, reframe("hello, kiosk"), "malformed")


def test_claims_of_the_wrong_schema(site):
    c = site.claims()
    del c["digest"]
    c["version"] = str(c["version"])
    refused(site, [frame(site.admin.seal(c, site.keys))], "schema")


def test_unknown_operation(site):
    c = site.claims()
    c["ops"][0]["op"] = "promote"
    refused(site, [frame(site.admin.seal(c, site.keys))], "unknown_operation")


def test_wrong_signature(site):
    h, p, s = jws_parts(site, site.claims())
    refused(site, reframe(encrypt_raw(f"{h}.{p}.{flip(s, 5)}".encode(), site.keys)), "bad_signature")


def test_payload_swapped_under_a_signature(site):
    h, _, s = jws_parts(site, site.claims())
    _, p2, _ = jws_parts(site, site.claims())
    refused(site, reframe(encrypt_raw(f"{h}.{p2}.{s}".encode(), site.keys)), "bad_signature")


def test_unsigned_alg_none(site):
    header = b64url(json.dumps({"alg": "none", "typ": "kiosk-gallery+jwt"}).encode())
    body = b64url(json.dumps(site.claims()).encode())
    refused(site, reframe(encrypt_raw(f"{header}.{body}.".encode(), site.keys)), "bad_signature")


def test_signed_by_an_unpinned_admin_key(site):
    rogue = Admin()
    refused(site, reframe(rogue.seal(site.claims(), site.keys)), "unknown_signer")


def test_signed_by_the_device_itself(site):
    token = site.admin.seal_raw(json.dumps(site.claims()).encode(), site.keys, signer=site.keys)
    refused(site, reframe(token), "unknown_signer")


def test_signed_message_of_another_type(site):
    key = site.admin.keys.signing
    token = site.admin.seal_raw(json.dumps(site.claims()).encode(), site.keys,
                                header={"alg": "Ed25519", "kid": key.get("kid"), "typ": "kiosk-event+jwt"})
    refused(site, reframe(token), "wrong_type")


def test_for_another_site(site):
    c = site.claims()
    c2 = site.admin.claims(World(), site="other-site", version=c["version"], base=c["base"], ops=c["ops"],
                           digest=c["digest"])
    refused(site, site.frames(c2), "wrong_site")


def test_for_other_devices_of_the_site(site):
    refused(site, site.frames(site.claims(devices=["door-2", "door-3"])), "not_for_this_device")


def test_expired(site):
    refused(site, site.frames(site.claims(now=time.time() - 8 * 86400)), "expired")


def test_issued_in_the_future(site):
    refused(site, site.frames(site.claims(now=time.time() + 3600)), "not_yet_valid")


def test_replayed_old_version(site):
    claims = site.apply_good()
    refused(site, site.frames(claims), "replayed")


def test_rollback_to_an_older_version(site):
    v = site.version
    assert v >= 2
    snap = site.admin.claims(site.world, site=SITE, version=v - 1, base="snapshot")
    refused(site, site.frames(snap), "rollback")


def test_version_gap_asks_for_a_snapshot(site):
    n = len([p for t, p, _ in site.probe.messages if t == site.status_topic])
    refused(site, site.frames(site.claims(version=site.version + 5, base=site.version + 3)), "version_gap")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = [json.loads(p) for t, p, _ in site.probe.messages[:] if t == site.status_topic][n:]
        if any(s.get("gallery", {}).get("wants_snapshot") for s in statuses):
            break
        time.sleep(0.1)
    status = statuses[-1]["gallery"]
    assert status["wants_snapshot"] is True and status["snapshot_reason"] == "version_gap"
    assert status["version"] == site.version and status["digest"] == site.world.digest()


def test_delta_on_an_older_base(site):
    v = site.version
    refused(site, site.frames(site.claims(version=v + 1, base=v - 1)), "base_mismatch")


def test_truncated_ciphertext(site):
    e = jwe_of(site, site.claims())
    e["ciphertext"] = e["ciphertext"][: len(e["ciphertext"]) // 2]
    refused(site, reframe(e), "not_decryptable")


def test_tampered_ciphertext(site):
    e = jwe_of(site, site.claims())
    e["ciphertext"] = flip(e["ciphertext"], 40)
    refused(site, reframe(e), "not_decryptable")


def test_tampered_authentication_tag(site):
    e = jwe_of(site, site.claims())
    e["tag"] = flip(e["tag"], 3)
    refused(site, reframe(e), "not_decryptable")


def test_tampered_wrapped_key(site):
    e = jwe_of(site, site.claims())
    e["encrypted_key"] = flip(e["encrypted_key"], 7)
    refused(site, reframe(e), "not_decryptable")


def test_downgraded_content_encryption(site):
    e = jwe_of(site, site.claims())
    e["protected"] = b64url(json.dumps({"enc": "A128GCM", "cty": "JWT"}).encode())
    refused(site, reframe(e), "malformed")


def test_compressed_content_is_refused(site):
    h, p, s = jws_parts(site, site.claims())
    token = encrypt_raw(f"{h}.{p}.{s}".encode(), site.keys, protected={"enc": "A256GCM", "cty": "JWT", "zip": "DEF"})
    refused(site, reframe(token), "malformed")


def test_encrypted_to_another_devices_key(site):
    other = keymod.generate(f"{SITE}/door-2")
    refused(site, site.frames(site.claims(), other), "wrong_recipient")


def test_template_of_the_wrong_length(site):
    c = site.claims()
    c["ops"][0]["templates"][0] = b64url(np.zeros(64, "<f4").tobytes())
    refused(site, [frame(site.admin.seal(c, site.keys))], "bad_template")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_template_with_non_finite_values(site, value):
    c = site.claims()
    v = vectors(site.rng, 1)[0]
    v[17] = value
    c["ops"][0]["templates"][0] = b64url(v.astype("<f4").tobytes())
    refused(site, [frame(site.admin.seal(c, site.keys))], "bad_template")


def test_nan_literal_in_the_claims(site):
    c = site.claims()
    c["ops"][0]["valid_from"] = 12345.0
    payload = json.dumps(c).replace("12345.0", "NaN").encode()
    refused(site, reframe(site.admin.seal_raw(payload, site.keys)), "malformed")


def test_duplicate_resident_ids(site):
    c = site.claims()
    c["ops"].append(erase_op(c["ops"][0]["id"]))
    refused(site, [frame(site.admin.seal(c, site.keys))], "duplicate_resident")


def test_duplicate_json_keys(site):
    c = site.claims()
    payload = json.dumps(c)[:-1] + ', "version": 1}'
    refused(site, reframe(site.admin.seal_raw(payload.encode(), site.keys)), "malformed")


def test_snapshot_that_erases(site):
    c = site.claims(version=site.version + 1, base="snapshot", ops=site.world.upserts())
    c["ops"].append(erase_op("R-0000"))
    refused(site, [frame(site.admin.seal(c, site.keys))], "schema")


def test_too_many_templates_for_one_resident(site):
    w = copy.deepcopy(site.world)
    w.put(Resident("R-many", "Many"), vectors(site.rng, 21))
    c = site.claims(ops=w.upserts(["R-many"]), world=w)
    refused(site, [frame(site.admin.seal(c, site.keys))], "schema")


def test_gallery_that_would_not_hash_to_the_admins_digest(site):
    refused(site, site.frames(site.claims(digest=hashlib.sha256(b"not this").hexdigest())), "digest_mismatch")


def test_oversized_message(site):
    big = frame("x" * (MAX_MESSAGE + 1))
    refused(site, [big], "too_large")


def test_parts_missing(site):
    w = copy.deepcopy(site.world)
    ids = []
    for i in range(40):
        w.put(Resident(f"R-bulk-{i}", "Bulk"), vectors(site.rng, 2))
        ids.append(f"R-bulk-{i}")
    frames = site.admin.frames(site.claims(ops=w.upserts(ids), world=w), site.keys, max_bytes=8192)
    assert len(frames) > 4
    ack = refused(site, frames[:2] + frames[3:], "parts_missing")  # answered once part_timeout_s is over
    assert ack["message_sha256"] == json.loads(frames[0])["sha256"]


def test_parts_that_disagree_on_their_count(site):
    w = copy.deepcopy(site.world)
    w.put(Resident("R-parts", "Parts"), vectors(site.rng, 20))
    frames = site.admin.frames(site.claims(ops=w.upserts(["R-parts"]), world=w), site.keys, max_bytes=8192)
    forged = json.loads(frames[1])
    forged["parts"] += 1
    refused(site, [frames[0], json.dumps(forged).encode()], "parts_mixed")


def test_parts_of_two_updates_mixed(site):
    w = copy.deepcopy(site.world)
    w.put(Resident("R-mix", "Mix"), vectors(site.rng, 20))
    a = site.admin.frames(site.claims(ops=w.upserts(["R-mix"]), world=w), site.keys, max_bytes=8192)
    b = site.admin.frames(site.claims(ops=w.upserts(["R-mix"]), world=w), site.keys, max_bytes=8192)
    assert len(a) == len(b) > 2
    stray = json.loads(b[1])
    stray["sha256"] = json.loads(a[0])["sha256"]
    refused(site, [a[0], json.dumps(stray).encode()] + a[2:], "checksum_mismatch")


def test_frame_whose_data_was_changed(site):
    [f] = site.frames(site.claims())
    obj = json.loads(f)
    obj["data"] = obj["data"].replace('"iv":"', '"iv":"A', 1)
    refused(site, [json.dumps(obj).encode()], "checksum_mismatch")


def test_a_good_update_still_applies_after_the_catalogue(site):
    before = site.kiosk.recognizer.gallery
    site.apply_good(2)
    assert site.kiosk.recognizer.gallery is not before and site.alive()
    assert not site.sync.wants_snapshot
    store = open_store(site.config)
    try:
        assert store.digest() == site.world.digest()
    finally:
        store.db.close()
