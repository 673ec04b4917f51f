"""Issue 14, findings 1 and 2: a publisher on the gallery topic, without the admin's key, takes no memory.

The attacks of the review, replayed over a real Mosquitto against a running
kiosk, by a client the broker lets write the site's gallery topic (the back
end's): empty parts of updates that say they have a million parts (finding
1), and a large JWE encrypted to the device's public key (finding 2). Before
the fix the device held every part (322 MB for four updates) and decrypted
the JWE before any signature was checked. Now a device keeps a part only
when an admin-signed head announced its update and the part hashes to what
the head says; nothing else is held, put together or decrypted. Memory and
CPU figures: ``scripts/bench-gallery-attacks`` (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from jwcrypto import jwe

from harness.broker import Broker, MqttProbe
from harness.gallery_kit import KioskSite
from jose_cross import to_jwcrypto
from kiosk.sync import keys as keymod

try:  # (this test also runs against the code before the fix, to show it fails there)
    from kiosk.sync.updates.device import ANSWER_BURST, ANSWER_RATE
except ImportError:
    ANSWER_BURST, ANSWER_RATE = 20, 1.0

pytestmark = pytest.mark.e2e

MAX_MESSAGE = 65536


@pytest.fixture(scope="module")
def site(tmp_path_factory, broker_pki):
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), broker_pki).start()
    s = KioskSite(broker, tmp_path_factory.mktemp("site"), max_message=MAX_MESSAGE)
    attacker = MqttProbe(broker, "backend")  # may write gallery topics, holds no admin key
    try:
        yield s, attacker
    finally:
        attacker.close()
        s.close()
        broker.kill()


def flood(attacker: MqttProbe, topic: str, frames) -> int:
    """Publish QoS 1 without waiting for each PUBACK (as fast as the broker takes them)."""
    n = 0
    for f in frames:
        info = attacker.client.publish(topic, f, qos=1)
        n += 1
        if n % 500 == 0:
            info.wait_for_publish(30)
    info.wait_for_publish(30)
    assert info.is_published(), "the broker did not take the flood"  # its last PUBACK: every frame before it too
    return n


def settled(site: KioskSite, since: int, quiet_s: float = 1.0) -> list[dict]:
    """Wait until the device's gallery queue has been empty for ``quiet_s`` (every message handled); its answers."""
    deadline = time.monotonic() + 120
    empty_since = None
    while time.monotonic() < deadline:
        if site.sync._queue.qsize() == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= quiet_s:
                return site.answers(since)
        else:
            empty_since = None
        time.sleep(0.05)
    raise AssertionError("the device did not get through the attack within 120 s")


def v1_frame(sha: str, part: int, parts: int, data: str) -> bytes:
    return json.dumps({"v": 1, "sha256": sha, "part": part, "parts": parts, "data": data},
                      separators=(",", ":")).encode()


def v2_part(sha: str, part: int, data: str) -> bytes:
    return json.dumps({"v": 2, "sha256": sha, "part": part, "data": data}, separators=(",", ":")).encode()


def big_jwe(device_keys: keymod.PartyKeys, size: int) -> str:
    """A JWE to the device's public key: anyone can make one. Its content is nobody's signed update."""
    sealed = jwe.JWE(b"A" * size, protected=json.dumps({"enc": "A256GCM", "cty": "JWT"}))
    sealed.add_recipient(to_jwcrypto(keymod.public_key(device_keys.encryption)),
                         header=json.dumps({"alg": "ECDH-ES+A256KW", "kid": device_keys.encryption_kid}))
    return sealed.serialize(compact=False)


def test_empty_parts_take_no_memory(site):
    """Finding 1: parts with empty data of updates that say they have 999,999 parts."""
    s, attacker = site
    before = s.snapshot()
    n = len(s.acks())
    for u in range(2):  # the review's frames (format 1), as many as a test affords
        sha = hashlib.sha256(f"empty-{u}".encode()).hexdigest()
        flood(attacker, s.site_topic, (v1_frame(sha, i, 999_999, "") for i in range(1500)))
    settled(s, n)
    assert s.sync.receiver.pending == 0, "parts of unannounced updates are held"
    # The same attack in today's frames: parts without a head, or with empty data.
    stray, dropped, unanswered = s.sync.receiver.stray, s.sync.dropped, s.sync.unanswered
    n = len(s.acks())
    sha = hashlib.sha256(b"empty-v2").hexdigest()
    flood(attacker, s.site_topic, (v2_part(sha, i, "x") for i in range(1500)))
    flood(attacker, s.site_topic, (v2_part(sha, i, "") for i in range(200)))
    answers = settled(s, n)
    assert s.sync.receiver.pending == 0 and s.sync.receiver.held_bytes == 0
    assert s.sync.receiver.stray - stray + s.sync.dropped - dropped >= 1500 - 1  # (a full queue drops some)
    # At most one answer for the whole unannounced update; junk is answered at most ANSWER_BURST at once.
    assert sum(a["reason"] == "unannounced" for a in answers) <= 1
    assert len(answers) <= ANSWER_BURST + 5 and s.sync.unanswered > unanswered
    assert s.snapshot() == before and s.alive()
    status = s.sync.status()
    assert status["stray_parts"] == s.sync.receiver.stray and status["unanswered"] == s.sync.unanswered


def test_a_large_jwe_to_the_devices_key_is_not_decrypted(site):
    """Finding 2: a 6 MiB JWE encrypted to the device's public key, in parts: nothing is kept or decrypted."""
    s, attacker = site
    before = s.snapshot()
    text = big_jwe(s.keys, 6 * 1024 * 1024)
    sha = hashlib.sha256(text.encode()).hexdigest()
    room = MAX_MESSAGE - 200
    chunks = [text[i:i + room] for i in range(0, len(text), room)]
    # As the review sent it (format 1): held part by part, then decrypted, before this fix.
    n = len(s.acks())
    time.sleep(ANSWER_BURST / ANSWER_RATE)  # the device may answer junk again
    flood(attacker, s.site_topic, [v1_frame(sha, 0, len(chunks), chunks[0])])
    settled(s, n)
    assert s.sync.receiver.pending == 0, "the first part of an unannounced update is held"
    flood(attacker, s.site_topic, (v1_frame(sha, i, len(chunks), c) for i, c in enumerate(chunks) if i))
    answers = settled(s, n)
    assert s.sync.receiver.pending == 0
    assert not any("encrypted content" in (a["detail"] or "") for a in answers), "the JWE was decrypted"
    # In today's frames, unannounced; and behind a genuine head replayed from an update already applied.
    applied = s.claims()
    frames = s.frames(applied)
    assert s.send(frames)["result"] == "applied"
    s.world.put(*_added(applied))
    before = s.snapshot()
    stray = s.sync.receiver.stray
    flood(attacker, s.site_topic, (v2_part(sha, i, c) for i, c in enumerate(chunks)))
    settled(s, 0)
    replayed_sha = json.loads(frames[1])["sha256"]
    n = len(s.acks())
    flood(attacker, s.site_topic, [frames[0]] + [v2_part(replayed_sha, i, c) for i, c in enumerate(chunks)])
    answers = settled(s, n)
    assert [a["reason"] for a in answers] in ([], ["replayed"])  # the head: a duplicate, or refused as replayed
    assert s.sync.receiver.pending == 0 and s.sync.receiver.held_bytes == 0
    assert s.sync.receiver.stray - stray == 2 * len(chunks)
    assert s.snapshot() == before and s.alive()
    # An update of the admin's still applies.
    s.apply_good()


def test_parts_forged_into_a_genuine_update_are_dropped_and_it_still_applies(site):
    """With publish rights and a genuine head seen on the broker, an attacker cannot spoil the update either."""
    s, attacker = site
    claims = s.claims()
    frames = s.frames(claims)
    sha = json.loads(frames[1])["sha256"]
    n = len(s.acks())
    assert s.probe.publish(s.site_topic, frames[0]) == 0  # the admin's head...
    flood(attacker, s.site_topic, [v2_part(sha, 0, "A" * 60_000), v2_part(sha, 0, "")])  # ...the attacker's part 0
    for f in frames[1:]:  # ...then the admin's parts
        assert s.probe.publish(s.site_topic, f) == 0
    deadline = time.monotonic() + 15
    while not any(a["result"] == "applied" for a in s.answers(n)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(a["result"] == "applied" and a["update_id"] == claims["update_id"] for a in s.answers(n))
    s.world.put(*_added(claims))
    assert s.sync.digest == s.world.digest()


def _added(claims: dict):
    """The resident a :meth:`KioskSite.claims` delta adds, as (Resident, vectors), for the test's world."""
    import base64

    import numpy as np

    from kiosk.gallery.store import Resident

    op = claims["ops"][0]
    vecs = [np.frombuffer(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)), "<f4").astype(np.float32)
            for t in op["templates"]]
    return Resident(op["id"], op["name"]), vecs
