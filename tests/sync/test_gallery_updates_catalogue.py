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
import time

import numpy as np
import pytest
from jwcrypto import jws

from harness.broker import Broker
from harness.gallery_kit import Admin, KioskSite, World, b64url, encrypt_raw, erase_op, part_frame, vectors
from jose_cross import to_jwcrypto
from kiosk.gallery.store import Resident, open_store
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import sign_compact
from kiosk.sync.updates.format import HEAD_TYP, update_head

pytestmark = pytest.mark.e2e

SITE, DEVICE = "elm-court", "door-1"
MAX_MESSAGE = 65536
Site = KioskSite


@pytest.fixture(scope="module")
def site(tmp_path_factory, broker_pki):
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), broker_pki).start()
    s = Site(broker, tmp_path_factory.mktemp("site"), max_message=MAX_MESSAGE)
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
    signed.add_signature(to_jwcrypto(key), alg="Ed25519", protected=json.dumps({"alg": "Ed25519", "kid": key.get("kid"),
                                                                   "typ": "kiosk-gallery+jwt"}))
    return signed.serialize(compact=True).split(".")


def reframe(site: Site, obj, claims: dict) -> list[bytes]:
    """Any sealed text (a forgery inside) behind a head the admin signs for ``claims``."""
    return site.admin.wrap(obj if isinstance(obj, str) else json.dumps(obj), claims, MAX_MESSAGE)


def sealed(site: Site, claims: dict, head: dict | None = None) -> list[bytes]:
    """``claims`` sealed as they are (even when broken), behind a head for ``head`` (default: the claims)."""
    return reframe(site, site.admin.seal(claims, site.keys), head or claims)


def flip(text: str, at: int) -> str:
    c = "A" if text[at] != "A" else "B"
    return text[:at] + c + text[at + 1 :]


# -- the catalogue ------------------------------------------------------------------------------


def test_not_json(site):
    refused(site, [b"\x00\x01 this is not JSON"], "malformed")


def test_frame_of_the_wrong_shape(site):
    refused(site, [json.dumps({"v": 2, "part": 0}).encode()], "malformed")


def test_frame_of_the_first_format(site):
    refused(site, [json.dumps({"v": 1, "sha256": "0" * 64, "part": 0, "parts": 1, "data": "x"}).encode()], "malformed")


def test_parts_without_a_head(site):
    frames = site.frames(site.claims())
    ack = refused(site, frames[1:], "unannounced")
    assert ack["message_sha256"] == json.loads(frames[1])["sha256"] and site.sync.receiver.pending == 0


def test_head_signed_by_an_unpinned_admin_key(site):
    c = site.claims()
    refused(site, Admin().wrap(site.admin.seal(c, site.keys), c, MAX_MESSAGE), "unknown_signer")


def test_head_with_a_forged_signature(site):
    frames = site.frames(site.claims())
    head = json.loads(frames[0])
    h, p, s = head["head"].split(".")
    head["head"] = f"{h}.{p}.{flip(s, 4)}"
    refused(site, [json.dumps(head).encode()] + frames[1:], "bad_signature")


def test_head_over_the_update_size_limit(site):
    c = site.claims()
    head = update_head(c, "x", ["x"])
    head["size"] = site.sync.limits.max_update_bytes + 1
    token = sign_compact(head, site.admin.keys.signing, typ=HEAD_TYP)
    ack = refused(site, [json.dumps({"v": 2, "head": token}).encode()], "too_large")
    assert ack["update_id"] == c["update_id"]  # the head is signed: the refusal can name the update


def test_head_and_update_that_disagree(site):
    c = site.claims()
    other = dict(c, update_id="not-the-same-update")
    refused(site, sealed(site, c, head=other), "head_mismatch")


def test_frame_holding_something_other_than_a_jwe(site):
    refused(site, reframe(site, "hello, kiosk", site.claims()), "malformed")


def test_claims_of_the_wrong_schema(site):
    c = site.claims()
    head = dict(c)
    del c["digest"]
    c["version"] = str(c["version"])
    refused(site, sealed(site, c, head), "schema")


def test_unknown_operation(site):
    c = site.claims()
    c["ops"][0]["op"] = "promote"
    refused(site, sealed(site, c), "unknown_operation")


def test_wrong_signature(site):
    c = site.claims()
    h, p, s = jws_parts(site, c)
    refused(site, reframe(site, encrypt_raw(f"{h}.{p}.{flip(s, 5)}".encode(), site.keys), c), "bad_signature")


def test_payload_swapped_under_a_signature(site):
    c = site.claims()
    h, _, s = jws_parts(site, c)
    _, p2, _ = jws_parts(site, site.claims())
    refused(site, reframe(site, encrypt_raw(f"{h}.{p2}.{s}".encode(), site.keys), c), "bad_signature")


def test_unsigned_alg_none(site):
    c = site.claims()
    header = b64url(json.dumps({"alg": "none", "typ": "kiosk-gallery+jwt"}).encode())
    body = b64url(json.dumps(c).encode())
    refused(site, reframe(site, encrypt_raw(f"{header}.{body}.".encode(), site.keys), c), "bad_signature")


def test_signed_by_an_unpinned_admin_key(site):
    rogue, c = Admin(), site.claims()
    refused(site, reframe(site, rogue.seal(c, site.keys), c), "unknown_signer")


def test_signed_by_the_device_itself(site):
    c = site.claims()
    token = site.admin.seal_raw(json.dumps(c).encode(), site.keys, signer=site.keys)
    refused(site, reframe(site, token, c), "unknown_signer")


def test_signed_message_of_another_type(site):
    key, c = site.admin.keys.signing, site.claims()
    token = site.admin.seal_raw(json.dumps(c).encode(), site.keys,
                                header={"alg": "Ed25519", "kid": key.get("kid"), "typ": "kiosk-event+jwt"})
    refused(site, reframe(site, token, c), "wrong_type")


def test_for_another_site(site):
    c = site.claims()
    c2 = site.admin.claims(World(), site="other-site", version=c["version"], base=c["base"], ops=c["ops"],
                           digest=c["digest"])
    refused(site, site.frames(c2), "wrong_site")


def test_for_another_site_behind_a_head_for_this_one(site):
    c = site.claims()
    c2 = site.admin.claims(World(), site="other-site", version=c["version"], base=c["base"], ops=c["ops"],
                           digest=c["digest"])
    refused(site, sealed(site, c2, head=c), "head_mismatch")


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


def _jwe_attack(site: Site, change) -> list[bytes]:
    c = site.claims()
    e = json.loads(site.admin.seal(c, site.keys))
    change(e)
    return reframe(site, e, c)


def test_truncated_ciphertext(site):
    refused(site, _jwe_attack(site, lambda e: e.update(ciphertext=e["ciphertext"][: len(e["ciphertext"]) // 2])),
            "not_decryptable")


def test_tampered_ciphertext(site):
    refused(site, _jwe_attack(site, lambda e: e.update(ciphertext=flip(e["ciphertext"], 40))), "not_decryptable")


def test_tampered_authentication_tag(site):
    refused(site, _jwe_attack(site, lambda e: e.update(tag=flip(e["tag"], 3))), "not_decryptable")


def test_tampered_wrapped_key(site):
    refused(site, _jwe_attack(site, lambda e: e.update(encrypted_key=flip(e["encrypted_key"], 7))), "not_decryptable")


def test_downgraded_content_encryption(site):
    refused(site, _jwe_attack(site, lambda e: e.update(protected=b64url(json.dumps({"enc": "A128GCM", "cty": "JWT"})
                                                                                  .encode()))), "malformed")


def test_compressed_content_is_refused(site):
    c = site.claims()
    h, p, s = jws_parts(site, c)
    token = encrypt_raw(f"{h}.{p}.{s}".encode(), site.keys, protected={"enc": "A256GCM", "cty": "JWT", "zip": "DEF"})
    refused(site, reframe(site, token, c), "malformed")


def test_encrypted_to_another_devices_key(site):
    other = keymod.generate(f"{SITE}/door-2")
    refused(site, site.frames(site.claims(), other), "wrong_recipient")


def test_template_of_the_wrong_length(site):
    c = site.claims()
    c["ops"][0]["templates"][0] = b64url(np.zeros(64, "<f4").tobytes())
    refused(site, sealed(site, c), "bad_template")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_template_with_non_finite_values(site, value):
    c = site.claims()
    v = vectors(site.rng, 1)[0]
    v[17] = value
    c["ops"][0]["templates"][0] = b64url(v.astype("<f4").tobytes())
    refused(site, sealed(site, c), "bad_template")


def test_nan_literal_in_the_claims(site):
    c = site.claims()
    c["ops"][0]["valid_from"] = 12345.0
    payload = json.dumps(c).replace("12345.0", "NaN").encode()
    refused(site, reframe(site, site.admin.seal_raw(payload, site.keys), c), "malformed")


def test_duplicate_resident_ids(site):
    c = site.claims()
    c["ops"].append(erase_op(c["ops"][0]["id"]))
    refused(site, sealed(site, c), "duplicate_resident")


def test_duplicate_json_keys(site):
    c = site.claims()
    payload = json.dumps(c)[:-1] + ', "version": 1}'
    refused(site, reframe(site, site.admin.seal_raw(payload.encode(), site.keys), c), "malformed")


def test_snapshot_that_erases(site):
    c = site.claims(version=site.version + 1, base="snapshot", ops=site.world.upserts())
    c["ops"].append(erase_op("R-0000"))
    refused(site, sealed(site, c), "schema")


def test_too_many_templates_for_one_resident(site):
    w = copy.deepcopy(site.world)
    w.put(Resident("R-many", "Many"), vectors(site.rng, 21))
    c = site.claims(ops=w.upserts(["R-many"]), world=w)
    refused(site, sealed(site, c), "schema")


def test_gallery_that_would_not_hash_to_the_admins_digest(site):
    refused(site, site.frames(site.claims(digest=hashlib.sha256(b"not this").hexdigest())), "digest_mismatch")


def test_oversized_message(site):
    refused(site, [part_frame("x" * (MAX_MESSAGE + 1))], "too_large")


def _in_parts(site: Site, rid: str, n: int = 20) -> tuple[list[bytes], World]:
    """A delta adding ``rid`` with ``n`` templates, in parts of 8 KiB; and the world it makes."""
    w = copy.deepcopy(site.world)
    w.put(Resident(rid, "Parts"), vectors(site.rng, n))
    return site.admin.frames(site.claims(ops=w.upserts([rid]), world=w), site.keys, max_bytes=8192), w


def test_parts_missing(site):
    w = copy.deepcopy(site.world)
    ids = []
    for i in range(40):
        w.put(Resident(f"R-bulk-{i}", "Bulk"), vectors(site.rng, 2))
        ids.append(f"R-bulk-{i}")
    frames = site.admin.frames(site.claims(ops=w.upserts(ids), world=w), site.keys, max_bytes=8192)
    assert len(frames) > 4
    ack = refused(site, frames[:2] + frames[3:], "parts_missing")  # answered once part_timeout_s is over
    assert ack["message_sha256"] == json.loads(frames[1])["sha256"]


def test_frame_whose_data_was_changed(site):
    frames, _ = _in_parts(site, "R-changed")
    obj = json.loads(frames[1])
    obj["data"] = obj["data"][:-1] + ("A" if obj["data"][-1] != "A" else "B")
    stray = site.sync.receiver.stray
    refused(site, [frames[0], json.dumps(obj).encode()] + frames[2:], "parts_missing")  # the changed part is not kept
    assert site.sync.receiver.stray == stray + 1


def test_stray_parts_do_not_spoil_an_update(site):
    """Parts of another update, or forged ones, under this update's SHA-256 are dropped; the genuine parts still fit."""
    (a, world), (b, _) = _in_parts(site, "R-mix"), _in_parts(site, "R-other")
    assert len(a) > 3 and len(b) > 3
    forged = json.loads(b[1])
    forged["sha256"] = json.loads(a[1])["sha256"]
    stray = site.sync.receiver.stray
    ack = site.send([a[0], json.dumps(forged).encode(), part_frame("x" * 100, sha=forged["sha256"], part=2)] + a[1:])
    assert ack["result"] == "applied" and ack["digest"] == world.digest(), ack
    assert site.sync.receiver.stray == stray + 2
    site.world = world


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
