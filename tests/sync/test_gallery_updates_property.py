"""Property: no random or mutated gallery update changes the gallery, unless it is the admin's own.

More than 10,000 inputs, in process (signing costs about a millisecond, so a
few updates are signed once and then mutated byte by byte):

- sealed updates, mutated (bytes flipped, cut, inserted, repeated), through
  the device's whole path (:meth:`GallerySync.handle`: head, parts, JWE,
  JWS, format, checks, apply, ack): the frames as they travel (the signed
  head or a part), or the sealed text under a head the admin signs for it;
- claim sets, mutated field by field, through the format and the apply
  (no signature: the checks behind it);
- random bytes and random JSON frames.

Every one is either refused with a known reason, the gallery exactly as it
was, or it is one of the admin's updates and the gallery hashes to the
admin's digest.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import sqlite3
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.gallery_kit import Admin, RecordingLink, RecordingRecognizer, World, erase_op, vectors
from kiosk.config import parse_config
from kiosk.errors import UpdateRejected
from kiosk.gallery.store import Resident, open_store
from kiosk.sync import keys as keymod
from kiosk.sync.updates.apply import apply_update, held_version
from kiosk.sync.updates.device import GallerySync
from kiosk.sync.updates.format import REASONS, parse_update, to_frames, verify_ack

pytestmark = pytest.mark.slow  # about a minute: 10,000 inputs through the device's path

SITE, DEVICE = "elm-court", "door-1"
SEALED_EXAMPLES = 6000
CLAIM_EXAMPLES = 3600
RANDOM_EXAMPLES = 600


def quick(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                    derandomize=True)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """A device at version 1, and three signed deltas on version 1 (as single frames and as parts)."""
    state = tmp_path_factory.mktemp("property")
    admin, keys = Admin(), keymod.generate(f"{SITE}/{DEVICE}")
    config = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{state}"\n'
                          "[mqtt]\nenabled = true\n[gallery]\nmax_message_bytes = 8192\n")
    rng = np.random.default_rng(99)
    world = World()
    for i in range(4):
        world.put(Resident(f"R-{i}", f"Resident {i}"), vectors(rng, 2))
    store = open_store(config)
    base = parse_update(json.dumps(admin.claims(world, site=SITE, version=1, base="snapshot")))
    apply_update(store, base, site=SITE, device=DEVICE, now=time.time(), skew=300)
    seeds = []
    for change in range(3):
        w = copy.deepcopy(world)
        if change == 0:
            w.put(Resident("R-new", "New resident", valid_until=time.time() + 86400), vectors(rng, 1))
            ops = w.upserts(["R-new"])
        elif change == 1:
            w.drop("R-1")
            ops = [erase_op("R-1")]
        else:
            w.put(Resident("R-2", "Renamed"), vectors(rng, 3))
            ops = w.upserts(["R-2"])
        claims = admin.claims(w, site=SITE, version=2, base=1, ops=ops)
        sealed = admin.seal(claims, keys)
        seeds.append((claims, to_frames(sealed, claims, admin.keys, 8192 if change != 2 else 2048), sealed))
    # A clock that moves a second each time it is read: the device answers every refusal
    # (it answers junk at most ANSWER_RATE a second), and the outcome can be checked.
    seconds = itertools.count(0.0, 1.0)
    sync = GallerySync(store, RecordingRecognizer(store.load()), RecordingLink(), keys,
                       keymod.KeyRing([admin.keys]), config, clock=lambda: next(seconds))
    allowed = {(1, world.digest())} | {(2, c["digest"]) for c, _, _ in seeds}
    yield sync, store, seeds, allowed, keys, world, admin
    store.db.close()


def held(store):
    return held_version(store), store.digest()


def rows(store) -> bytes:
    """Every gallery row as stored (ciphertexts included): cheaper than decrypting for the digest."""
    h = hashlib.sha256()
    for table, order in (("residents", "id"), ("templates", "id"), ("meta", "key"), ("gallery_updates", "update_id")):
        for row in store.db.execute(f"SELECT * FROM {table} ORDER BY {order}"):
            h.update(repr(row).encode())
    return h.digest()


_rings: dict = {}
_checked: list = []


def ring_of(keys) -> keymod.KeyRing:
    if keys.owner not in _rings:
        _rings[keys.owner] = keymod.KeyRing([keys.public()])
    return _rings[keys.owner]


def check_outcome(sync, store, before, gallery_before, ack, allowed, keys):
    """Refused with a known reason and not a row changed, or applied and at an admin's digest."""
    if ack is None:  # parts still missing: nothing applied yet
        assert rows(store) == before and sync.recognizer.gallery is gallery_before
        return
    token = sync.link.sent[-1][1]
    _checked.append(1)
    if len(_checked) % 20 == 1:  # the signature (about a millisecond) on a sample; the claims every time
        assert ack == verify_ack(token, ring_of(keys))
    assert ack == json.loads(base64.urlsafe_b64decode(token.split(b".")[1] + b"==="))
    if ack["result"] == "refused":
        assert ack["reason"] in REASONS
        assert rows(store) == before and sync.recognizer.gallery is gallery_before
    else:
        after = held(store)
        assert ack["result"] == "applied" and after in allowed
        assert sync.recognizer.gallery.digest() == after[1] == ack["digest"]


# -- sealed updates, mutated --------------------------------------------------------------------

SPECIAL = [b'"', b"\\", b".", b"{", b"}", b"A", b"=", b"-", b"0", b"\x00", b"\xff"]


KINDS = ["flip", "cut", "insert", "truncate", "repeat", "special"]
#: A mutation: (kind, where in the payload out of 65536, a size or bit, bytes to insert).
mutation = st.tuples(st.sampled_from(KINDS), st.integers(0, 65535), st.integers(0, 255), st.binary(min_size=1, max_size=16))


def mutate(payload: bytes, m) -> bytes:
    kind, where, n, data = m
    if not payload:
        return data
    i = where * len(payload) // 65536
    size = 1 + n % 64
    if kind == "flip":
        return payload[:i] + bytes([payload[i] ^ (1 << (n % 8))]) + payload[i + 1 :]
    if kind == "cut":
        return payload[:i] + payload[i + size :]
    if kind == "insert":
        return payload[:i] + data + payload[i:]
    if kind == "truncate":
        return payload[:i]
    if kind == "repeat":
        return payload[:i] + payload[i : i + size] * 2 + payload[i + size :]
    return payload[:i] + SPECIAL[n % len(SPECIAL)] + payload[i + 1 :]


def back_to_version_1(sync, store, baseline) -> None:
    """The device's database and gallery as the fixture left them (SQLite's backup API, both ways)."""
    baseline.backup(store.db.conn)
    sync.version, sync.digest = held_version(store), store.digest()
    sync.recognizer.gallery = store.load()


def test_mutated_sealed_updates_never_change_the_gallery_wrongly(device):
    sync, store, seeds, allowed, keys, _, admin = device
    ran, outcomes = [], {}
    baseline = sqlite3.connect(":memory:")
    store.db.conn.backup(baseline)

    @quick(SEALED_EXAMPLES)
    @given(seed=st.integers(0, len(seeds) - 1), part=st.integers(0, 20), inside=st.booleans(),
           mutations=st.lists(mutation, min_size=1, max_size=3))
    def run(seed, part, inside, mutations):
        claims, frames, sealed = seeds[seed]
        if inside:  # the sealed text itself, behind a head the admin signs for it (a head vouches for size, not content)
            text = sealed.encode()
            for m in mutations:
                text = mutate(text, m)
            frames = to_frames(text.decode("latin-1"), claims, admin.keys, 8192 if len(frames) == 2 else 2048)
            part = len(frames) - 1
            payload = frames[part]
        else:  # the frames as they travel: the head (part 0) or a part
            part %= len(frames)
            payload = frames[part]
            for m in mutations:
                payload = mutate(payload, m)
        sync.receiver.forget()  # each example starts with no half-assembled update
        before, gallery_before, stray = rows(store), sync.recognizer.gallery, sync.receiver.stray
        ack = None
        for i, f in enumerate(frames):
            ack = sync.handle(payload if i == part else f)
            if ack is not None and i < len(frames) - 1:
                break  # refused early; the rest would start afresh
        check_outcome(sync, store, before, gallery_before, ack, allowed, keys)
        ran.append(1)
        if ack is not None:
            outcomes[ack["reason"] or "applied"] = outcomes.get(ack["reason"] or "applied", 0) + 1
        elif sync.receiver.stray > stray:
            outcomes["stray"] = outcomes.get("stray", 0) + 1
        if ack is not None and ack["result"] == "applied":
            back_to_version_1(sync, store, baseline)  # else every later example stops at its head, as replayed

    run()
    assert len(ran) >= SEALED_EXAMPLES
    # The mutations reached every layer, not just the first parser: the head's signature, the
    # parts against the head, the decryption.
    assert {"malformed", "bad_signature", "stray", "not_decryptable", "applied"} <= set(outcomes), outcomes
    assert outcomes.get("replayed", 0) + outcomes.get("rollback", 0) < SEALED_EXAMPLES // 10, outcomes


# -- claim sets, mutated -------------------------------------------------------------------------

#: Values to put where a field was: wrong types, edge numbers, non-finite floats, odd strings.
ODD_VALUES = [None, True, False, 0, -1, 1, 2**53, 2**64, -(2**70), 0.5, 1e308, float("nan"), float("inf"),
              float("-inf"), "", "snapshot", "upsert", "erase", "R-0", "x" * 200, "\u0000", "é", [], [None], {},
              {"op": "upsert"}, {"op": "erase", "id": "R-0"}, ["door-1"], "0" * 64]
json_values = st.sampled_from(ODD_VALUES) | st.integers(-5, 10) | st.text(max_size=12)
FIELDS = ["v", "update_id", "site", "devices", "version", "base", "iat", "exp", "digest", "ops"]
OP_FIELDS = ["op", "id", "name", "templates", "valid_from", "valid_until"]


@st.composite
def claim_mutation(draw):
    where = draw(st.sampled_from(["top", "op", "template", "ops"]))
    key = draw(st.sampled_from(FIELDS if where == "top" else OP_FIELDS))
    action = draw(st.sampled_from(["set", "delete", "add"]))
    value = draw(json_values)
    index = draw(st.integers(0, 10))
    return where, key, action, value, index


def apply_claim_mutation(claims: dict, m) -> dict:
    where, key, action, value, index = m
    c = copy.deepcopy(claims)
    if where != "top" and not isinstance(c.get("ops"), list):
        return c  # an earlier mutation took the operations away
    if where == "top":
        target = c
    elif where == "ops":
        if action == "delete" and c["ops"]:
            del c["ops"][index % len(c["ops"])]
        elif action == "add" and c["ops"]:
            c["ops"].append(copy.deepcopy(c["ops"][index % len(c["ops"])]))
        else:
            c["ops"].append(value)
        return c
    else:
        if not c["ops"] or not isinstance(c["ops"][0], dict):
            return c
        target = c["ops"][index % len(c["ops"])]
        if not isinstance(target, dict):
            return c
        if where == "template":
            t = (target.get("templates") or [None])[0] if isinstance(target.get("templates"), list) else None
            if not isinstance(t, str) or not t:
                return c
            j = index % len(t)
            target["templates"][0] = t[:j] + (str(value)[:3] if action != "delete" else "") + t[j + 1 :]
            return c
    if action == "delete":
        target.pop(key, None)
    elif action == "add":
        target[f"{key}_extra"] = value
    else:
        target[key] = value
    return c


def test_mutated_claims_are_refused_or_reach_the_admins_digest(device):
    sync, store, seeds, _, _, world, admin = device
    ran, reasons = [], {}

    @quick(CLAIM_EXAMPLES)
    @given(seed=st.integers(0, len(seeds) - 1), mutations=st.lists(claim_mutation(), min_size=1, max_size=3))
    def run(seed, mutations):
        # Each seed is a delta on the baseline, re-versioned onto what the device holds.
        v = held_version(store)
        claims = dict(seeds[seed][0], version=v + 1, base=v)
        for m in mutations:
            claims = apply_claim_mutation(claims, m)
        before = rows(store)
        try:
            text = json.dumps(claims)  # NaN and Infinity become the non-JSON literals
            update = parse_update(text, sync.limits)
            applied = apply_update(store, update, site=SITE, device=DEVICE, now=time.time(), skew=300)
        except UpdateRejected as e:
            assert e.reason in REASONS and rows(store) == before
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        else:
            # Still a valid update (only its id or times changed, say): it must land exactly.
            assert held(store) == (update.version, update.digest) == (applied.version, applied.digest)
            reasons["applied"] = reasons.get("applied", 0) + 1
            # Back to the baseline gallery (as a newer version) for the next example.
            v = held_version(store)
            restore = parse_update(json.dumps(admin.claims(world, site=SITE, version=v + 1, base="snapshot")))
            apply_update(store, restore, site=SITE, device=DEVICE, now=time.time(), skew=300)
        ran.append(1)

    run()
    assert len(ran) >= CLAIM_EXAMPLES
    assert {"schema", "malformed", "bad_template", "digest_mismatch"} <= set(reasons), reasons


# -- random input ------------------------------------------------------------------------------------


def seeds_head(device) -> bytes:
    return device[2][0][1][0]


def test_random_bytes_and_frames_are_refused(device):
    sync, store, _, allowed, keys, _, _ = device
    ran = []
    frames = st.fixed_dictionaries({
        "v": st.sampled_from([1, 2, "1"]), "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
        "part": st.integers(-1, 3), "data": st.text(max_size=200),
    }, optional={"parts": st.integers(0, 3)}).map(lambda d: json.dumps(d).encode())
    heads = st.fixed_dictionaries({
        "v": st.sampled_from([1, 2]), "head": st.text(max_size=300) | st.just(json.loads(seeds_head(device))["head"]),
    }).map(lambda d: json.dumps(d).encode())

    @quick(RANDOM_EXAMPLES)
    @given(payload=st.binary(max_size=600) | frames | heads)
    def run(payload):
        sync.receiver.forget()
        before, gallery_before = rows(store), sync.recognizer.gallery
        ack = sync.handle(payload)
        check_outcome(sync, store, before, gallery_before, ack, allowed, keys)
        ran.append(1)

    run()
    assert len(ran) >= RANDOM_EXAMPLES


def test_at_least_ten_thousand_inputs_in_all():
    assert SEALED_EXAMPLES + CLAIM_EXAMPLES + RANDOM_EXAMPLES >= 10_000
