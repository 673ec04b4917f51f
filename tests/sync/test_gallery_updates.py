"""Gallery updates in process: format, sealing, parts, one-transaction apply, acks, the admin's plan."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from harness.gallery_kit import Admin, World, erase_op, part_frame, vectors
from kiosk.config import GallerySettings
from kiosk.db import open_database
from kiosk.errors import UpdateRejected
from kiosk.match.decide import Decision, Outcome
from kiosk.gallery.store import Gallery, GalleryStore, Resident
from kiosk.gallery.templates import TemplateCipher
from kiosk.sync import keys as keymod
from kiosk.sync.updates.apply import apply_update, held_version
from kiosk.sync.updates.admin import AdminGallery, DeviceView, Ledger, plan
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.updates.receive import UpdateReceiver
from kiosk.sync.updates.format import REASONS, ack_claims, parse_update, sign_ack, to_frames, verify_ack

SITE, DEVICE = "elm-court", "door-1"


@pytest.fixture(scope="module")
def parties():
    return Admin(), keymod.generate(f"{SITE}/{DEVICE}")


@pytest.fixture
def store(tmp_path):
    s = GalleryStore(open_database(tmp_path / "device.db"), TemplateCipher.from_file(tmp_path / "template.key"))
    yield s
    s.db.close()


def receive(parties, frames, limits=None):
    admin, device = parties
    rx = UpdateReceiver(device, keymod.KeyRing([admin.keys]), limits or GallerySettings())
    got = None
    for f in frames:
        got = rx.offer(f)
    return got


def apply(store, update, now=None):
    return apply_update(store, update, site=SITE, device=DEVICE, now=now or time.time(), skew=300)


def world_of(rng, n, per=1):
    w = World()
    for i in range(n):
        w.put(Resident(f"R-{i:04d}", f"Resident number {i}"), vectors(rng, per))
    return w


def test_snapshot_then_delta_reach_the_admins_digest(parties, store):
    admin, device = parties
    rng = np.random.default_rng(1)
    w = world_of(rng, 5, per=2)
    got = receive(parties, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device))
    a = apply(store, got.update)
    assert a.version == 1 and a.digest == w.digest() == store.digest() and len(a.gallery) == 5
    # A delta: one changed (name, validity, new templates), one new, one erased.
    w.put(Resident("R-0001", "Renamed", valid_until=time.time() + 3600), vectors(rng, 3))
    w.put(Resident("R-0100", "New"), vectors(rng, 1))
    w.drop("R-0002")
    ops = w.upserts(["R-0001", "R-0100"]) + [erase_op("R-0002")]
    got = receive(parties, admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=ops), device))
    a = apply(store, got.update)
    assert (a.upserted, a.erased) == (2, 1)
    assert a.digest == w.digest() == store.digest() == a.gallery.digest()
    assert held_version(store) == 2 and a.gallery.version == "2"
    assert store.residents()["R-0001"].name == "Renamed"
    assert store.db.execute("SELECT COUNT(*) FROM templates WHERE resident_id = 'R-0001'").fetchone()[0] == 3
    # The searched gallery finds a resident by their template.
    assert a.gallery.search(w.vectors["R-0100"][0]).resident_id == "R-0100"


def test_large_snapshot_in_shuffled_parts(parties, store):
    admin, device = parties
    w = world_of(np.random.default_rng(2), 300)
    frames = admin.frames(admin.claims(w, site=SITE, version=3, base="snapshot"), device, max_bytes=16384)
    assert len(frames) > 10 and all(len(f) <= 16384 for f in frames)
    head, parts = frames[0], frames[1:]
    random.Random(3).shuffle(parts)
    admin_, device_ = parties
    rx = UpdateReceiver(device_, keymod.KeyRing([admin_.keys]), GallerySettings(max_message_bytes=16384))
    results = [rx.offer(f) for f in [head, *parts]]
    assert all(r is None for r in results[:-1]) and results[-1] is not None and rx.pending == 0
    assert apply(store, results[-1].update).digest == w.digest()


def test_parts_before_their_head_are_not_kept(parties):
    """The head comes first (MQTT keeps one publisher's order on a topic); parts before it are dropped."""
    admin, device = parties
    frames = admin.frames(admin.claims(world_of(np.random.default_rng(2), 40), site=SITE, version=3, base="snapshot"),
                          device, max_bytes=8192)
    rx = UpdateReceiver(device, keymod.KeyRing([admin.keys]), GallerySettings(max_message_bytes=8192))
    with pytest.raises(UpdateRejected) as first:
        rx.offer(frames[2])
    assert first.value.reason == "unannounced" and not first.value.quiet
    with pytest.raises(UpdateRejected) as second:
        rx.offer(frames[3])
    assert second.value.reason == "unannounced" and second.value.quiet  # answered once per update
    assert rx.pending == 0 and rx.held_bytes == 0 and rx.stray == 2
    assert rx.offer(frames[0]) is None and rx.pending == 1 and rx.held_bytes == 0  # the head keeps no part
    got = [rx.offer(f) for f in frames[1:]]
    assert got[-1] is not None and rx.pending == 0


def test_multi_recipient_update_opens_for_each_device_only(parties):
    admin, d1 = parties
    d2, stranger = keymod.generate(f"{SITE}/door-2"), keymod.generate(f"{SITE}/door-3")
    w = world_of(np.random.default_rng(4), 2)
    frames = admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), d1, d2)
    for dev in (d1, d2):
        assert receive((admin, dev), frames).update.digest == w.digest()
    with pytest.raises(UpdateRejected) as e:
        receive((admin, stranger), frames)
    assert e.value.reason == "wrong_recipient"


def test_the_broker_sees_neither_names_nor_templates(parties):
    admin, device = parties
    w = World()
    v = vectors(np.random.default_rng(5), 1)
    w.put(Resident("R-secret-id", "Ada Lovelace"), v)
    wire = b"".join(admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device))
    for needle in (b"Ada Lovelace", b"R-secret-id", v[0].tobytes()[:16]):
        assert needle not in wire
    from harness.gallery_kit import b64url

    assert b64url(v[0].tobytes())[:40].encode() not in wire


def test_failure_half_way_applies_nothing(parties, store):
    admin, device = parties
    rng = np.random.default_rng(6)
    w = world_of(rng, 3)
    apply(store, receive(parties, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device)).update)
    before = (store.digest(), held_version(store), store.db.execute("SELECT COUNT(*) FROM templates").fetchone())
    # A valid delta whose digest is not what the gallery would hash to: refused after every row was written.
    w2 = world_of(rng, 3)
    bad = admin.claims(w2, site=SITE, version=2, base=1, ops=w2.upserts(), digest="0" * 64)
    with pytest.raises(UpdateRejected) as e:
        apply(store, receive(parties, admin.frames(bad, device)).update)
    assert e.value.reason == "digest_mismatch"
    assert (store.digest(), held_version(store), store.db.execute("SELECT COUNT(*) FROM templates").fetchone()) == before
    assert not store.db.conn.in_transaction


def test_version_rules(parties, store):
    admin, device = parties
    w = world_of(np.random.default_rng(7), 2)
    first = receive(parties, admin.frames(admin.claims(w, site=SITE, version=4, base="snapshot"), device)).update
    apply(store, first)
    cases = [
        (first, "replayed"),
        (admin.claims(w, site=SITE, version=3, base="snapshot"), "rollback"),
        (admin.claims(w, site=SITE, version=4, base=3), "rollback"),
        (admin.claims(w, site=SITE, version=9, base=6), "version_gap"),
        (admin.claims(w, site=SITE, version=9, base=2), "base_mismatch"),
        (admin.claims(w, site=SITE, version=5, base=4, now=time.time() - 30 * 86400), "expired"),
        (admin.claims(w, site=SITE, version=5, base=4, now=time.time() + 3600), "not_yet_valid"),
        (admin.claims(w, site="other-site", version=5, base=4), "wrong_site"),
        (admin.claims(w, site=SITE, version=5, base=4, devices=["door-9"]), "not_for_this_device"),
    ]
    for claims, reason in cases:
        update = claims if not isinstance(claims, dict) else parse_update(json.dumps(claims))
        with pytest.raises(UpdateRejected) as e:
            apply(store, update)
        assert e.value.reason == reason
        assert held_version(store) == 4
    # Named devices including this one: taken.
    ok = parse_update(json.dumps(admin.claims(w, site=SITE, version=5, base=4, devices=[DEVICE, "door-2"])))
    assert apply(store, ok).version == 5


def test_erase_purges_delivered_checkins_and_expiry_needs_no_update(parties, store, tmp_path):
    admin, device = parties
    rng = np.random.default_rng(8)
    w = world_of(rng, 2)
    w.put(Resident("R-expired", "Gone by now", valid_until=time.time() - 60), vectors(rng))
    a = apply(store, receive(parties, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device)).update)
    # Past valid-until: in the gallery, yet never matched.
    assert "R-expired" in a.gallery.residents
    assert a.gallery.search(w.vectors["R-expired"][0]).resident_id != "R-expired"
    outbox = Outbox(store.db, site=SITE, device=DEVICE)
    delivered = outbox.commit(Decision(Outcome.ACCEPTED, 1, "R-0000", 0.3, 0.1, 3))
    outbox.mark_delivered(delivered.seq)
    waiting = outbox.commit(Decision(Outcome.ACCEPTED, 2, "R-0000", 0.3, 0.1, 3))
    other = outbox.commit(Decision(Outcome.ACCEPTED, 3, "R-0001", 0.3, 0.1, 3))
    outbox.mark_delivered(other.seq)
    w.drop("R-0000")
    a = apply(store, receive(parties, admin.frames(
        admin.claims(w, site=SITE, version=2, base=1, ops=[erase_op("R-0000")]), device)).update)
    assert (a.erased, a.checkins_purged, a.reclaimed) == (1, 1, True)
    left = {c.seq for c in outbox.all()}
    assert left == {waiting.seq, other.seq}  # the undelivered one stays until delivered


def test_acks_are_signed_and_hold_no_personal_data(parties, store):
    admin, device = parties
    w = World()
    w.put(Resident("R-private", "Private Name"), vectors(np.random.default_rng(9)))
    claims = admin.claims(w, site=SITE, version=1, base="snapshot")
    claims["ops"].append(dict(claims["ops"][0]))  # the same resident twice
    with pytest.raises(UpdateRejected) as e:
        receive(parties, admin.wrap(admin.seal_raw(json.dumps(claims).encode(), device), claims))
    assert e.value.reason == "duplicate_resident"
    ack = ack_claims(site=SITE, device=DEVICE, result="refused", version=0, digest=store.digest(), now=time.time(),
                     reason=e.value.reason, detail=str(e.value))
    token = sign_ack(ack, device)
    assert b"R-private" not in token.encode() and b"Private Name" not in token.encode()
    assert verify_ack(token, keymod.KeyRing([device.public()]))["reason"] == "duplicate_resident"
    with pytest.raises(Exception):
        verify_ack(token, keymod.KeyRing([keymod.generate(f"{SITE}/{DEVICE}").public()]))


def test_every_reason_is_explained():
    assert all(isinstance(v, str) and v for v in REASONS.values()) and len(REASONS) >= 20


def test_the_documented_head_is_a_head(parties):
    """docs/gallery-updates.md's head example follows the format, and names what a real head names."""
    from harness.docs import docs_snippet
    from kiosk.sync.updates.format import UpdateHead

    documented = json.loads(docs_snippet("gallery-head"))
    head = UpdateHead.model_validate(documented)
    assert head.kind == "delta" and len(head.parts) == 3
    admin, device = parties
    claims = admin.claims(World(), site=SITE, version=7, base=6)
    real = json.loads(base64.urlsafe_b64decode(json.loads(admin.frames(claims, device)[0])["head"].split(".")[1] + "=="))
    assert set(real) == set(documented) | ({"devices"} if "devices" in real else set())


def test_frames_never_exceed_the_limit():
    admin = Admin()
    text = '{"a":"' + "x" * 100_000 + '"}'
    claims = admin.claims(World(), site=SITE, version=1, base="snapshot")
    for limit in (4096, 10_000, 65536):
        frames = to_frames(text, claims, admin.keys, limit)
        assert all(len(f) <= limit for f in frames)
        assert "".join(json.loads(f)["data"] for f in frames[1:]) == text
        assert "data" not in json.loads(frames[0])  # the head: the signed description of what follows


# -- the admin's side ------------------------------------------------------------------


def admin_store(tmp_path, name="admin"):
    d = tmp_path / name
    d.mkdir()
    return GalleryStore(open_database(d / "kiosk.db"), TemplateCipher.from_file(d / "template.key"))


def test_plan_deltas_against_the_ledger(tmp_path):
    store = admin_store(tmp_path)
    rng = np.random.default_rng(10)
    for i in range(3):
        store.enroll(Resident(f"R-{i}", f"N{i}"), [(v, None) for v in vectors(rng, 2)])
    ledger = Ledger(store, SITE)
    devices = ["door-1", "door-2"]
    p = plan(AdminGallery.read(store), ledger, devices, {})
    [send] = p.sends
    assert send.claims["version"] == 1 and send.claims["base"] == 0 and len(send.claims["ops"]) == 3
    ledger.record(*p.record, AdminGallery.read(store))
    assert plan(AdminGallery.read(store), ledger, devices, {}).sends == []
    # A change and an erasure: only they travel.
    store.upsert_resident(Resident("R-1", "Renamed"))
    store.erase("R-2")
    g = AdminGallery.read(store)
    p = plan(g, ledger, devices, {"door-2": DeviceView("door-2", version=0)})
    site, snap = p.sends
    assert [op["op"] for op in site.claims["ops"]] == ["upsert", "erase"]
    assert (site.claims["version"], site.claims["base"], site.claims["digest"]) == (2, 1, g.digest)
    # door-2 is behind (version 0): it also gets a snapshot of version 2, for it alone.
    assert (snap.device, snap.recipients, snap.claims["base"], snap.claims["devices"]) == ("door-2", ["door-2"], "snapshot", ["door-2"])
    ledger.record(*p.record, g)
    # Nothing changed, a device still behind: a snapshot of the current version.
    p = plan(g, ledger, devices, {"door-1": DeviceView("door-1", version=1, wants_snapshot=True)})
    assert [(s.device, s.claims["version"], s.claims["base"]) for s in p.sends] == [("door-1", 2, "snapshot")]
    assert p.record is None
    # A device at the right version with another hash: a site-wide snapshot of a new version.
    p = plan(g, ledger, devices, {"door-1": DeviceView("door-1", version=2, digest="f" * 64)})
    assert [(s.device, s.claims["version"], s.claims["base"]) for s in p.sends] == [(None, 3, "snapshot")]
    # --snapshot.
    p = plan(g, ledger, devices, {}, force_snapshot=True)
    assert p.sends[0].claims["version"] == 3 and len(p.sends[0].claims["ops"]) == 2


def test_gallery_derived_in_memory_equals_the_one_loaded_from_the_rows(parties, store):
    admin, device = parties
    rng = np.random.default_rng(11)
    w = world_of(rng, 30, per=2)
    a = apply_update(store, receive(parties, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"),
                                                          device)).update,
                     site=SITE, device=DEVICE, now=time.time(), skew=300, current=Gallery.empty())
    for step in range(2, 5):
        w.put(Resident(f"R-{step:04d}", f"Changed {step}", valid_from=1.0), vectors(rng, 3))
        w.put(Resident(f"N-{step}", "New"), vectors(rng, 1))
        w.drop(f"R-{step + 10:04d}")
        ops = w.upserts([f"R-{step:04d}", f"N-{step}"]) + [erase_op(f"R-{step + 10:04d}")]
        u = receive(parties, admin.frames(admin.claims(w, site=SITE, version=step, base=step - 1, ops=ops), device)).update
        a = apply_update(store, u, site=SITE, device=DEVICE, now=time.time(), skew=300, current=a.gallery)
        loaded = store.load()
        assert a.digest == a.gallery.digest() == loaded.digest() == w.digest()
        assert a.gallery.ids == loaded.ids and np.array_equal(a.gallery.starts, loaded.starts)
        assert a.gallery.residents == loaded.residents and a.gallery.version == loaded.version
        for rid in a.gallery.ids:  # the same templates per resident (order within a resident may differ)
            i, j = a.gallery.ids.index(rid), loaded.ids.index(rid)
            ends = lambda g, k: g.starts[k + 1] if k + 1 < len(g.ids) else g.matrix.shape[0]  # noqa: E731
            mine = sorted(r.tobytes() for r in a.gallery.matrix[a.gallery.starts[i]:ends(a.gallery, i)])
            theirs = sorted(r.tobytes() for r in loaded.matrix[loaded.starts[j]:ends(loaded, j)])
            assert mine == theirs


def test_database_changed_behind_the_searched_gallery_is_noticed(parties, store):
    admin, device = parties
    rng = np.random.default_rng(12)
    w = world_of(rng, 4)
    a = apply(store, receive(parties, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device)).update)
    store.enroll(Resident("R-local", "Enrolled on the device"), [(v, None) for v in vectors(rng, 1)])
    w.put(Resident("R-0009", "New"), vectors(rng))
    u = receive(parties, admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=w.upserts(["R-0009"])),
                                      device)).update
    before = store.digest()
    with pytest.raises(UpdateRejected) as e:  # the rows say otherwise than the searched gallery: they win
        apply_update(store, u, site=SITE, device=DEVICE, now=time.time(), skew=300, current=a.gallery)
    assert e.value.reason == "digest_mismatch" and store.digest() == before and held_version(store) == 1


def send(sync, frames):
    """Each frame through the device's path; the last answer (None while parts are missing)."""
    ack = None
    for f in frames:
        ack = sync.handle(f)
    return ack


def device_sync(parties, tmp_path, **kw):
    """The device's gallery stage on a real store, with a recording recogniser and link:
    (config, store, recognizer, link, sync). ``kw``: GallerySync's own (a clock)."""
    from harness.gallery_kit import RecordingLink, RecordingRecognizer
    from kiosk.config import parse_config
    from kiosk.gallery.store import open_store
    from kiosk.sync.updates.device import GallerySync

    admin, device = parties
    config = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{tmp_path}"\n'
                          "[mqtt]\nenabled = true\n")
    store = open_store(config)
    recognizer, link = RecordingRecognizer(store.load()), RecordingLink()
    sync = GallerySync(store, recognizer, link, device, keymod.KeyRing([admin.keys]), config, **kw)
    return config, store, recognizer, link, sync


def test_device_worker_swaps_acks_asks_for_snapshots_and_scrubs_the_old_gallery(parties, tmp_path):
    admin, device = parties
    config, store, recognizer, link, sync = device_sync(parties, tmp_path)
    rng = np.random.default_rng(13)
    w = world_of(rng, 3)
    first = recognizer.gallery
    ack = None
    for f in admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device):
        ack = sync.handle(f)
    assert ack["result"] == "applied" and recognizer.swaps == [recognizer.gallery] and recognizer.gallery is not first
    assert link.status_requests == 1  # the retained status shows the new version at once
    topic, token, qos, retain = link.sent[-1]
    assert (topic, qos, retain) == (f"kiosk/{SITE}/{DEVICE}/ack", 1, True)
    assert verify_ack(token, keymod.KeyRing([device.public()]))["digest"] == w.digest()
    recognizer.stats.frames += 2
    assert sync.scrub_retired() == 1  # the empty gallery it started with
    # The old gallery stays intact while a frame may still be searching it, then is overwritten.
    second = recognizer.gallery
    w.put(Resident("R-0001", "Changed"), vectors(rng, 2))
    send(sync, admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=w.upserts(["R-0001"])), device))
    assert np.any(second.matrix) and sync.scrub_retired() == 0
    recognizer.stats.frames += 2
    assert sync.scrub_retired() == 1 and not np.any(second.matrix)
    assert np.any(recognizer.gallery.matrix) and recognizer.gallery.digest() == w.digest()
    # A gap: refused, the status asks for a snapshot at once; a snapshot clears it.
    ack = send(sync, admin.frames(admin.claims(w, site=SITE, version=9, base=8), device))
    assert (ack["result"], ack["reason"]) == ("refused", "version_gap") and link.status_requests == 3
    assert sync.status()["wants_snapshot"] and sync.status()["snapshot_reason"] == "version_gap"
    ack = send(sync, admin.frames(admin.claims(w, site=SITE, version=10, base="snapshot"), device))
    assert ack["result"] == "applied" and not sync.status()["wants_snapshot"] and link.status_requests == 4
    status = sync.status()
    assert (status["version"], status["digest"], status["applied"], status["refused"]) == (10, w.digest(), 3, 1)
    assert "R-0001" not in json.dumps(status) and "Changed" not in json.dumps(status)
    sync.close()
    sync.close()  # safe twice


def test_parts_held_stay_under_one_updates_worth_of_memory(parties):
    admin, device = parties
    limits = GallerySettings(max_message_bytes=8192, max_update_bytes=20_000)
    rx = UpdateReceiver(device, keymod.KeyRing([admin.keys]), limits)
    rng = np.random.default_rng(14)
    first, second = (admin.frames(admin.claims(world_of(rng, 12), site=SITE, version=1, base="snapshot"), device,
                                  max_bytes=8192) for _ in range(2))
    assert 3 < len(first) and sum(map(len, first)) < 20_000 < sum(map(len, first[1:] + second[1:]))
    for f in first[:-1] + second[:-1]:
        assert rx.offer(f) is None
    # The older update made room for the newer one (at its head), and is refused for it.
    [evicted] = rx.expire()
    assert evicted.reason == "parts_missing" and evicted.sha256 == json.loads(first[1])["sha256"]
    assert rx.held_bytes <= limits.max_update_bytes
    with pytest.raises(UpdateRejected) as late:
        rx.offer(first[-1])
    assert late.value.quiet  # a part of an update already answered
    assert rx.offer(second[-1]) is not None and rx.pending == 0


def test_empty_parts_are_not_frames(parties):
    admin, device = parties
    rx = UpdateReceiver(device, keymod.KeyRing([admin.keys]), GallerySettings())
    with pytest.raises(UpdateRejected) as e:
        rx.offer(part_frame("", sha="0" * 64))
    assert e.value.reason == "malformed" and rx.pending == 0


def test_admin_commands_without_a_broker(tmp_path, capsys):
    import stat

    from kiosk.admin import main as admin_main

    state = tmp_path / "admin-state"
    assert admin_main(["gallery", "admin-key", "--out", str(tmp_path / "admin.jwks")]) == 0
    assert stat.S_IMODE((tmp_path / "admin.jwks").stat().st_mode) == 0o600
    assert keymod.load_public_one(tmp_path / "admin.pub.jwks").owner == "admin"
    assert admin_main(["gallery", "admin-key", "--out", str(tmp_path / "admin.jwks")]) == 1  # never overwritten
    door = keymod.generate(f"{SITE}/door-1")
    keymod.save_public(tmp_path / "door-1.pub.jwks", door)
    keymod.save_public(tmp_path / "other.pub.jwks", keymod.generate("other-site/door-9"))
    store = open_store_at(state)
    store.enroll(Resident("R-1", "One"), [(v, None) for v in vectors(np.random.default_rng(15), 2)])
    store.db.close()
    capsys.readouterr()
    common = ["gallery", "publish", "--state-dir", str(state), "--site", SITE, "--key", str(tmp_path / "admin.jwks")]
    assert admin_main(common + ["--devices", str(tmp_path / "door-1.pub.jwks"), "--dry-run"]) == 0
    assert "delta version 1 on 0: 1 operation(s) to site (1 device(s))" in capsys.readouterr().out
    assert admin_main(common + ["--devices", str(tmp_path / "other.pub.jwks"), "--dry-run"]) == 1
    assert "not of a device of site" in capsys.readouterr().err
    # validity: dates, Unix seconds, none; refused when it ends before it starts.
    v = ["gallery", "validity", "--state-dir", str(state), "--id", "R-1"]
    assert admin_main(v + ["--from", "2030-01-01T00:00:00+00:00", "--until", "1900000000"]) == 0
    r = open_store_at(state)
    assert (r.residents()["R-1"].valid_from, r.residents()["R-1"].valid_until) == (1893456000.0, 1900000000.0)
    r.db.close()
    assert admin_main(v + ["--until", "2029-01-01T00:00:00+00:00"]) == 2
    assert admin_main(v + ["--from", "none", "--until", "none"]) == 0
    assert admin_main(["gallery", "validity", "--state-dir", str(state), "--id", "R-nobody", "--until", "none"]) == 1


def open_store_at(state):
    from kiosk.config import parse_config
    from kiosk.gallery.store import open_store

    return open_store(parse_config(f'[device]\nsite = "{SITE}"\nstate_dir = "{state}"\n'))


class Ticks:
    """The gallery thread's monotonic clock, advanced by the test."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_erasure_applies_though_its_pages_cannot_be_reclaimed_yet_and_they_are_later(parties, tmp_path):
    """Another writer holds the file when the erasure's pages are to be handed back (on a Pi: the card full or
    failing, a busy file): the update is committed, so it is applied, swapped in and acked all the same, and the
    gallery thread reclaims the pages once it can, until then trying again every RECLAIM_RETRY_S."""
    import sqlite3

    from kiosk.sync.updates.device import RECLAIM_RETRY_S

    admin, device = parties
    ticks = Ticks()
    config, store, recognizer, link, sync = device_sync(parties, tmp_path, clock=ticks)
    rng = np.random.default_rng(15)
    w = world_of(rng, 4)
    assert send(sync, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device))["result"] == \
        "applied"
    other = sqlite3.connect(config.database_path, isolation_level=None)

    def another_writer(sql: str) -> None:  # takes the file just as the pages are to be handed back
        if sql.startswith("PRAGMA incremental_vacuum") and not other.in_transaction:
            other.execute("BEGIN IMMEDIATE")

    store.db.execute("PRAGMA busy_timeout = 100")
    store.db.conn.set_trace_callback(another_writer)
    try:
        gone = sorted(w.residents)[0]
        w.drop(gone)
        ack = send(sync, admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=[erase_op(gone)]), device))
        assert ack["result"] == "applied" and held_version(store) == 2
        assert gone not in recognizer.gallery.residents and recognizer.gallery.digest() == w.digest()
        assert sync.reclaim_pending() is None, "not due yet"
        ticks.t += RECLAIM_RETRY_S
        assert sync.reclaim_pending() is False, "the other writer still holds it"
    finally:
        store.db.conn.set_trace_callback(None)
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    ticks.t += RECLAIM_RETRY_S
    assert sync.reclaim_pending() is True and sync.reclaim_pending() is None
    assert Path(str(config.database_path) + "-wal").stat().st_size == 0
    sync.close()


def test_a_reload_swaps_on_the_gallery_thread_and_reads_one_snapshot(parties, tmp_path):
    """SIGHUP's reload of the gallery goes through the gallery thread (never between an update's swap and its ack),
    takes the version and digest with it, and retires the old gallery; and a load reads one snapshot of the
    database: a resident committed by another connection while the templates are read is in it wholly or not at
    all (before, their templates came without their resident row and the load failed)."""
    import sqlite3

    from kiosk.gallery.store import open_store

    admin, device = parties
    config, store, recognizer, link, sync = device_sync(parties, tmp_path)
    rng = np.random.default_rng(16)
    w = world_of(rng, 3)
    send(sync, admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device))
    other = open_store(config)  # the admin's tools on the device, or anything else writing the file
    try:
        assert not sync.reload(), "no gallery thread yet"
        sync.start()
        other.enroll(Resident("R-late", "Late"), [(vectors(rng, 1)[0], None)])
        before = recognizer.gallery
        assert sync.reload()
        assert "R-late" in recognizer.gallery.residents and recognizer.swaps[-1] is recognizer.gallery
        assert sync.digest == recognizer.gallery.digest() == other.digest() and sync.version == 1
        assert any(old is before for old, _, _ in sync._retired) or not np.any(before.matrix)

        # One snapshot: another connection commits a new resident and their template between the two reads.
        committed = []

        def commit_meanwhile(sql: str) -> None:
            if sql.startswith("SELECT resident_id, vector FROM templates") and not committed:
                other.enroll(Resident("R-between", "Between"), [(vectors(rng, 1)[0], None)])
                committed.append(sql)

        reader = open_store(config)
        reader.db.conn.set_trace_callback(commit_meanwhile)
        try:
            g = reader.load()
        finally:
            reader.db.conn.set_trace_callback(None)
            reader.db.close()
        assert committed and "R-between" not in g.residents and "R-between" not in g.ids
        assert "R-between" in other.residents()
    finally:
        sync.close()
        other.db.close()


def test_a_fault_of_the_device_while_applying_is_answered_refused_and_nothing_is_held(parties, tmp_path,
                                                                                      monkeypatch, caplog):
    """A bug or fault inside the transaction (not a refusal the format foresees) used to leave only a journal line
    and no answer: the admin waited in vain. It is refused (``internal``), rolled back, and may be sent again."""
    import kiosk.sync.updates.apply as apply_module

    admin, device = parties
    config, store, recognizer, link, sync = device_sync(parties, tmp_path)
    rng = np.random.default_rng(21)
    w = world_of(rng, 2)
    first = admin.frames(admin.claims(w, site=SITE, version=1, base="snapshot"), device)
    assert send(sync, first)["result"] == "applied"
    held = (store.digest(), sync.version, recognizer.gallery)
    w.put(Resident("R-new", "A new resident"), vectors(rng, 1))
    delta = admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=w.upserts(["R-new"])), device)
    real = apply_module.set_meta

    def failing(db, key, value):
        if key == "gallery_version":
            raise RuntimeError("R-new: a fault mid-transaction")
        return real(db, key, value)

    monkeypatch.setattr(apply_module, "set_meta", failing)
    ack = send(sync, delta)
    assert (ack["result"], ack["reason"]) == ("refused", "internal")
    assert (store.digest(), sync.version, recognizer.gallery) == held  # the resident's row was rolled back
    assert "R-new" not in store.load().residents
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "RuntimeError" in logged and "R-new" not in logged  # no resident's id from the exception's text
    monkeypatch.setattr(apply_module, "set_meta", real)
    # Published again (sealed afresh, as `gallery publish` does): the same version applies, nothing of it was held.
    again = send(sync, admin.frames(admin.claims(w, site=SITE, version=2, base=1, ops=w.upserts(["R-new"])), device))
    assert again["result"] == "applied" and sync.version == 2 and "R-new" in recognizer.gallery.residents
