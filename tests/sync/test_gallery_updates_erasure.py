"""Erasure forensics: after an erase update, nothing of the resident is left in the database files.

The database file, its ``-wal`` and its ``-shm`` are read byte for byte:
the resident's id, name, template vectors (as float32, in clear) and their
sealed ciphertexts must appear nowhere, and no template of anyone ever
appears there in clear.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from harness.gallery_kit import Admin, World, erase_op, vectors
from kiosk.admin import main as admin_main
from kiosk.config import GallerySettings, parse_config
from kiosk.db import open_database
from kiosk.match.decide import Decision, Outcome
from kiosk.gallery.store import GalleryStore, Resident, open_store
from kiosk.gallery.templates import TemplateCipher
from kiosk.sync import keys as keymod
from kiosk.sync.updates.apply import apply_update
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.updates.receive import UpdateReceiver

SITE, DEVICE = "elm-court", "door-1"
TARGETS = ["R-forget-me-0042", "R-forget-me-0117", "R-forget-me-0199"]


def files_of(db_path: Path) -> dict[str, bytes]:
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db_path) + suffix)
        out[p.name] = p.read_bytes() if p.exists() else b""
    return out


def chunks(vec: np.ndarray) -> list[bytes]:
    """Pieces of a template in clear: whole, and 32-byte windows (any one would give it away)."""
    raw = vec.astype("<f4").tobytes()
    return [raw] + [raw[i : i + 32] for i in range(0, len(raw), 96)]


def assert_no_clear_templates(db_path: Path, world: World) -> None:
    blobs = files_of(db_path)
    for rid, vecs in world.vectors.items():
        for v in vecs:
            for piece in chunks(v):
                for name, data in blobs.items():
                    assert piece not in data, f"a template of {rid} in clear in {name}"


@pytest.fixture
def device(tmp_path):
    admin, keys = Admin(), keymod.generate(f"{SITE}/{DEVICE}")
    path = tmp_path / "device" / "kiosk.db"
    store = GalleryStore(open_database(path), TemplateCipher.from_file(tmp_path / "device" / "template.key"))
    rx = UpdateReceiver(keys, keymod.KeyRing([admin.keys]), GallerySettings())
    yield admin, keys, store, rx, path
    store.db.close()


def send(admin, keys, store, rx, claims):
    got = None
    for f in admin.frames(claims, keys):
        got = rx.offer(f)
    return apply_update(store, got.update, site=SITE, device=DEVICE, now=time.time(), skew=300)


def test_erased_resident_leaves_nothing_in_db_wal_or_shm(device):
    admin, keys, store, rx, path = device
    rng = np.random.default_rng(42)
    world = World()
    for i in range(200):  # enough rows that the tables and the index span many pages
        rid = f"R-forget-me-{i:04d}" if f"R-forget-me-{i:04d}" in TARGETS else f"R-keep-{i:04d}"
        world.put(Resident(rid, f"Name of {rid}"), vectors(rng, 3))
    send(admin, keys, store, rx, admin.claims(world, site=SITE, version=1, base="snapshot"))
    assert_no_clear_templates(path, world)
    # A change before the erasure: the old name and templates must go too.
    old = {rid: list(world.vectors[rid]) for rid in TARGETS}
    for rid in TARGETS:
        world.put(Resident(rid, f"Renamed {rid}", valid_until=time.time() + 86400), vectors(rng, 2))
    send(admin, keys, store, rx, admin.claims(world, site=SITE, version=2, base=1, ops=world.upserts(TARGETS)))
    assert_no_clear_templates(path, world)
    # Their delivered check-ins (with an evidence crop) are in the outbox.
    outbox = Outbox(store.db, site=SITE, device=DEVICE)
    for i, rid in enumerate(TARGETS):
        c = outbox.commit(Decision(Outcome.ACCEPTED, i, rid, 0.3, 0.1, 3), evidence=b"\xff\xd8jpeg of " + rid.encode())
        outbox.mark_delivered(c.seq)
    sealed = [b for rid in TARGETS for (b,) in store.db.execute("SELECT vector FROM templates WHERE resident_id = ?", [rid])]
    assert sealed and files_of(path)  # what is about to be erased exists
    assert any(TARGETS[0].encode() in data for data in files_of(path).values())

    everything = World()
    everything.vectors = {**{r: world.vectors[r] + old.get(r, []) for r in world.vectors}}
    for rid in TARGETS:
        world.drop(rid)
    a = send(admin, keys, store, rx, admin.claims(world, site=SITE, version=3, base=2, ops=[erase_op(r) for r in TARGETS]))
    assert (a.erased, a.checkins_purged, a.reclaimed) == (3, 3, True)
    assert store.digest() == world.digest()

    blobs = files_of(path)
    assert blobs["kiosk.db-wal"] == b""  # checkpointed and truncated
    needles = []
    for rid in TARGETS:
        needles += [rid.encode(), f"Name of {rid}".encode(), f"Renamed {rid}".encode(), b"jpeg of " + rid.encode()]
        for v in everything.vectors[rid]:
            needles += chunks(v)
    needles += [b[13:45] for b in sealed]  # the ciphertexts, too
    for name, data in blobs.items():
        for needle in needles:
            assert needle not in data, f"{needle[:24]!r}... still in {name}"
    # The others are intact, and still never in clear.
    assert_no_clear_templates(path, world)
    assert set(store.residents()) == set(world.residents)


def test_admin_side_erase_command_erases_too(tmp_path):
    state = tmp_path / "admin"
    cfg = parse_config(f'[device]\nsite = "{SITE}"\nstate_dir = "{state}"\n')
    store = open_store(cfg)
    rng = np.random.default_rng(7)
    keep, gone = vectors(rng, 1), vectors(rng, 2)
    store.enroll(Resident("R-keep", "Kept"), [(v, None) for v in keep])
    store.enroll(Resident("R-erase-me", "Erased Person"), [(v, "photo-sha") for v in gone])
    store.db.close()
    assert admin_main(["gallery", "erase", "--state-dir", str(state), "--id", "R-erase-me"]) == 0
    assert admin_main(["gallery", "erase", "--state-dir", str(state), "--id", "R-erase-me"]) == 1  # no longer there
    for name, data in files_of(cfg.database_path).items():
        for needle in [b"R-erase-me", b"Erased Person", b"photo-sha"] + [c for v in gone for c in chunks(v)]:
            assert needle not in data, f"{needle[:24]!r}... still in {name}"
    store = open_store(cfg)
    assert set(store.residents()) == {"R-keep"}
    store.db.close()
