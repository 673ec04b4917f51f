"""Every parser that reads bytes from outside the device, fuzzed (hypothesis), as the gallery receiver is.

- event envelopes at the back end (:func:`kiosk.backend.consumer.verify_event`, the one path the
  reference consumer and the ingest share);
- provisioning codes and reset codes (:class:`kiosk.provisioning.store.ProvisioningStore`, as the
  camera and ``kiosk provision`` hand them over);
- residents' QR credentials (:class:`kiosk.qrtoken.QrVerifier`);
- the config file (:func:`kiosk.config.load_config`).

Inputs: random bytes, genuine messages mutated byte by byte, and messages with a genuine signature
over random claims (what only a key holder could send: the checks behind the signature). Each is
refused with a reason from its known list and a readable message, never another exception, and
nothing changes (the state folder, the nonce table, the seen ids); or it is genuinely valid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fleet import make_fleet
from kiosk.config import QrCredentialSettings, load_config
from kiosk.db import open_database
from kiosk.errors import ConfigError, EnvelopeError, ProvisioningRefused, TokenRefused
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.store import ProvisioningStore
from kiosk.qrtoken import NonceCache, QrVerifier, issue_token
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import seal, sign_compact
from kiosk.backend.consumer import verify_event

pytestmark = pytest.mark.slow  # about a minute in all

SITE, DEVICE = "block-7", "door-1"
REPO = Path(__file__).resolve().parents[2]


def quick(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                    derandomize=True)


# -- mutations and random values ------------------------------------------------------------------------------

SPECIAL = [b'"', b"\\", b".", b"{", b"}", b"[", b"A", b"=", b"-", b"0", b"\x00", b"\xff", b"\xc3"]
mutation = st.tuples(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat", "special"]),
                     st.integers(0, 65535), st.integers(0, 255), st.binary(min_size=1, max_size=16))


def mutate(payload: bytes, m) -> bytes:
    kind, where, n, data = m
    if not payload:
        return data
    i = where * len(payload) // 65536
    size = 1 + n % 64
    if kind == "flip":
        return payload[:i] + bytes([payload[i] ^ (1 << (n % 8))]) + payload[i + 1:]
    if kind == "cut":
        return payload[:i] + payload[i + size:]
    if kind == "insert":
        return payload[:i] + data + payload[i:]
    if kind == "truncate":
        return payload[:i]
    if kind == "repeat":
        return payload[:i] + payload[i:i + size] * 2 + payload[i + size:]
    return payload[:i] + SPECIAL[n % len(SPECIAL)] + payload[i + 1:]


def mutated(genuine: bytes):
    return st.lists(mutation, min_size=1, max_size=3).map(lambda ms: _apply(genuine, ms))


def _apply(payload: bytes, ms) -> bytes:
    for m in ms:
        payload = mutate(payload, m)
    return payload


ODD = [None, True, False, 0, -1, 1, 2**31, 2**63, 2**70, -(2**70), 0.5, 1e308, -1e308, "", "x" * 300, "\u0000",
       "é", "door-1", "block-7", "block-7/door-1", "../etc", [], [None], {}, {"a": 1}, "A" * 43 + "." + "B" * 44]
json_value = st.recursive(st.sampled_from(ODD) | st.integers() | st.text(max_size=40) | st.floats(allow_nan=False, allow_infinity=False),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=6)


def claims_like(genuine: dict):
    """The genuine claims with fields deleted, replaced by odd values, or added."""
    keys = sorted(genuine)

    @st.composite
    def build(draw):
        c = dict(genuine)
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["set", "delete", "add"]))
            key = draw(st.sampled_from(keys))
            if action == "delete":
                c.pop(key, None)
            elif action == "add":
                c[draw(st.text(min_size=1, max_size=6))] = draw(json_value)
            else:
                c[key] = draw(json_value)
        return c

    return build()


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


# -- event envelopes at the back end ---------------------------------------------------------------------------

EVENT_REASONS = {"malformed", "wrong_recipient", "not_decryptable", "unknown_signer", "bad_signature", "wrong_type",
                 "topic_mismatch", "missing_claims", "bad_claims", "claims_mismatch"}


@pytest.fixture(scope="module")
def parties():
    return keymod.generate(keymod.BACKEND), keymod.generate(f"{SITE}/{DEVICE}")


def test_event_envelopes(parties):
    backend, device = parties
    ring = keymod.KeyRing([device.public()])
    topic = f"kiosk/{SITE}/{DEVICE}/events"
    claims = {"event_id": "0190-aaaa", "seq": 1, "site": SITE, "device": DEVICE, "type": "checkin",
              "time": 1_800_000_000.0}
    genuine = seal(claims, device, backend.encryption).encode()
    assert verify_event(topic, genuine, backend, ring, "kiosk").claims == claims
    reasons: dict[str, int] = {}

    @quick(700)
    @given(payload=st.binary(max_size=400) | mutated(genuine) | st.just(deep(5000))
           | claims_like(claims).map(lambda c: seal(c, device, backend.encryption).encode()),
           where=st.sampled_from([topic, topic, "kiosk/block-7/door-2/events", "kiosk/+/#", "", "kiosk//events",
                                  "kiosk/" + "a/" * 300 + "events"]))
    def run(payload, where):
        try:
            event = verify_event(where, payload, backend, ring, "kiosk")
        except EnvelopeError as e:
            assert e.reason in EVENT_REASONS and str(e).startswith(e.reason), e
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        else:  # only what the device itself signed, for its own topic
            assert where == topic and event.signer == f"{SITE}/{DEVICE}"
            assert (event.claims["site"], event.claims["device"]) == (SITE, DEVICE)

    run()
    assert {"malformed", "not_decryptable", "missing_claims", "bad_claims"} <= set(reasons), reasons


# -- provisioning and reset codes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return make_fleet(tmp_path_factory.mktemp("fleet"))


def kiosk_config(fleet, state: Path):
    from kiosk.config import parse_config

    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return parse_config(f'[device]\nstate_dir = "{state}"\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\n'
                        f'[provisioning]\nfleet_root_key = "{fleet.root_public}"\n')


def tree(path: Path) -> str:
    """Every file under ``path`` and its content, hashed: what must not change on a refusal."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_provisioning_codes(fleet, tmp_path):
    state = tmp_path / "state"
    cfg = kiosk_config(fleet, state)
    genuine_bundle = fleet.bundle(hardware_id=None)
    genuine = bmod.sign_bundle(genuine_bundle, fleet.root).encode()
    root = fleet.root
    reasons: dict[str, int] = {}
    taken = []

    @quick(500)
    @given(payload=st.binary(max_size=300) | mutated(genuine) | st.just(deep(1400))
           | claims_like(genuine_bundle.claims()).map(
               lambda c: sign_compact(c, root, typ="kiosk-provision+jwt").encode()))
    def run(payload):
        before = tree(state)
        store = ProvisioningStore(cfg)
        try:
            store.install(payload)
        except ProvisioningRefused as e:
            assert e.reason in bmod.MESSAGES and str(e).startswith(bmod.MESSAGES[e.reason]), e
            assert tree(state) == before, "a refused code changed the state folder"
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        else:  # a valid code for this kiosk, signed by the root key: taken; start afresh
            assert store.load().site == SITE
            taken.append(payload)
            shutil.rmtree(store.directory)

    run()
    assert {"malformed", "bad_signature", "bad_content"} <= set(reasons), reasons


def test_reset_codes(fleet, tmp_path):
    state = tmp_path / "state"
    cfg = kiosk_config(fleet, state)
    provisioning = bmod.sign_bundle(fleet.bundle(hardware_id=None, now=time.time() - 60), fleet.root)
    ProvisioningStore(cfg).install(provisioning)
    genuine_claims = {"v": 1, "site": SITE, "dev": DEVICE, "iat": int(time.time()), "exp": int(time.time()) + 3600,
                      "nonce": secrets.token_urlsafe(12)}
    genuine = sign_compact(genuine_claims, fleet.root, typ="kiosk-reset+jwt").encode()
    root = fleet.root
    reasons: dict[str, int] = {}

    @quick(400)
    @given(payload=st.binary(max_size=300) | mutated(genuine) | st.just(deep(1400))
           | claims_like(genuine_claims).map(lambda c: sign_compact(c, root, typ="kiosk-reset+jwt").encode()))
    def run(payload):
        before = tree(state)
        store = ProvisioningStore(cfg)
        try:
            store.reset(payload, discard_undelivered=True)
        except ProvisioningRefused as e:
            assert e.reason in bmod.MESSAGES and str(e).startswith(bmod.MESSAGES[e.reason]), e
            assert tree(state) == before, "a refused reset changed the state folder"
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        else:  # a valid reset (a fresh nonce, say): it worked; provision again for the next example
            assert not store.provisioned
            ProvisioningStore(cfg).install(provisioning)

    run()
    assert {"malformed", "bad_signature", "bad_content"} <= set(reasons), reasons


# -- residents' QR credentials --------------------------------------------------------------------------------

QR_REASONS = {"not_ours", "forged", "bad_claims", "too_long", "not_yet_valid", "expired", "wrong_site", "wrong_door",
              "replayed"}


def test_qr_credentials(parties, tmp_path):
    backend, _ = parties
    db = open_database(tmp_path / "kiosk.db")
    verifier = QrVerifier(backend.public(), SITE, QrCredentialSettings(), NonceCache(db), device=DEVICE)
    genuine = issue_token(backend, "r-0815", SITE, DEVICE).encode()
    genuine_claims = json.loads(_b64(genuine.split(b".")[1]))
    # The genuine header and claims under a signature the back end never made: forged, whatever the keys
    # drawn (random mutations of a signature reach "forged" only as often as they keep it well-formed).
    resigned = genuine.rsplit(b".", 1)[0] + b"." + base64.urlsafe_b64encode(bytes(64)).rstrip(b"=")
    reasons: dict[str, int] = {}

    def nonces():
        return db.execute("SELECT nonce FROM qr_nonces ORDER BY nonce").fetchall()

    @quick(600)
    @given(payload=st.binary(max_size=300) | mutated(genuine) | st.just(deep(700)) | st.just(resigned)
           | claims_like(genuine_claims).map(lambda c: sign_compact(c, backend.signing, typ="kiosk-qr+jwt").encode()))
    def run(payload):
        before = nonces()
        try:
            cred = verifier.verify(payload)
        except TokenRefused as e:
            assert e.reason in QR_REASONS and str(e), e
            if e.reason != "replayed":
                assert nonces() == before, "a refused credential used up a nonce"
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        else:  # the back end's signature over claims for this door, in date, never seen: used up now
            assert cred.site == SITE and cred.audience == f"{SITE}/{DEVICE}" and len(nonces()) == len(before) + 1

    try:
        run()
    finally:
        db.close()
    assert {"not_ours", "forged", "bad_claims"} <= set(reasons), reasons


def _b64(s: bytes) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))


# -- the config file -------------------------------------------------------------------------------------------


def test_config_files(tmp_path):
    genuine = (REPO / "config" / "kiosk.toml").read_bytes()
    assert load_config(REPO / "config" / "kiosk.toml")
    lines = genuine.splitlines(keepends=True)
    path = tmp_path / "kiosk.toml"
    outcomes = {"error": 0, "ok": 0}

    line_edits = st.lists(st.tuples(st.integers(0, len(lines) - 1), st.sampled_from(["drop", "twice", "value"]),
                                    st.sampled_from([b"= 1", b'= "x"', b"= -1e999", b"= [[[]]]", b"= {a=1}", b"= true",
                                                     b"= 1979-05-27", b"= nan", b"= ''''''", b"=", b"= 99999999999999999999"])),
                          min_size=1, max_size=4)

    def edit(ops) -> bytes:
        out = list(lines)
        for i, op, value in ops:
            i %= len(out)
            if op == "drop":
                del out[i]
            elif op == "twice":
                out.insert(i, out[i])
            elif b"=" in out[i] and not out[i].lstrip().startswith(b"#"):
                out[i] = out[i].split(b"=", 1)[0] + value + b"\n"
            if not out:
                break
        return b"".join(out)

    @quick(500)
    @given(text=st.binary(max_size=300) | mutated(genuine) | line_edits.map(edit)
           | st.just(b"a = " + deep(3000)) | st.just(b"[" + b"a." * 2000 + b"b]\n"))
    def run(text):
        path.write_bytes(text)
        try:
            cfg = load_config(path)
        except ConfigError as e:
            message = str(e)
            assert str(path) in message or "invalid configuration" in message, message
            assert "Traceback" not in message
            outcomes["error"] += 1
        else:
            assert cfg.source_path == path
            outcomes["ok"] += 1

    run()
    assert outcomes["error"] > 100 and outcomes["ok"] > 0, outcomes
