"""Gallery: 1:N search equals brute force, runner-up is another resident, templates sealed at rest."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kiosk.db import open_database
from kiosk.errors import KeyFileError, StorageError
from kiosk.gallery.store import Gallery, GalleryStore, Resident
from kiosk.gallery.templates import TemplateCipher


def _random_gallery(rng, n_res, per):
    owners = [f"r{i}" for i in range(n_res) for _ in range(per)]
    vecs = rng.normal(size=(len(owners), 128)).astype(np.float32) * 0.1
    residents = {o: Resident(o, o) for o in set(owners)}
    return Gallery(residents, owners, vecs), owners, vecs


@settings(max_examples=60, deadline=None)
@given(n_res=st.integers(1, 12), per=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_search_matches_brute_force(n_res, per, seed):
    rng = np.random.default_rng(seed)
    g, owners, vecs = _random_gallery(rng, n_res, per)
    q = rng.normal(size=128).astype(np.float32) * 0.1
    d = np.linalg.norm(vecs.astype(np.float64) - q, axis=1)
    per_res = {}
    for o, x in zip(owners, d):
        per_res[o] = min(per_res.get(o, np.inf), x)
    ranked = sorted(per_res.items(), key=lambda kv: kv[1])
    m = g.search(q)
    assert m.resident_id == ranked[0][0]
    assert m.distance == pytest.approx(ranked[0][1], abs=1e-4)
    if len(ranked) > 1:
        assert m.runner_up_id == ranked[1][0] != m.resident_id
        assert m.margin == pytest.approx(ranked[1][1] - ranked[0][1], abs=1e-4)
    else:
        assert m.runner_up_id is None and m.margin == np.inf


def test_empty_gallery_matches_nobody():
    m = Gallery.empty().search(np.zeros(128, np.float32))
    assert m.resident_id is None and m.distance == np.inf


def test_expired_resident_stops_matching():
    v = np.full(128, 0.05, np.float32)
    g = Gallery({"a": Resident("a", "A", valid_until=100.0), "b": Resident("b", "B")}, ["a", "b"], np.vstack([v, v + 0.05]))
    assert g.search(v, now=50.0).resident_id == "a"
    m = g.search(v, now=150.0)
    assert m.resident_id == "b" and m.runner_up_id is None


def _store(tmp_path) -> GalleryStore:
    return GalleryStore(open_database(tmp_path / "k.db"), TemplateCipher.from_file(tmp_path / "template.key"))


def test_store_round_trip_and_templates_never_in_clear(tmp_path):
    store = _store(tmp_path)
    vec = (np.random.default_rng(1).normal(size=128) * 0.09).astype(np.float32)  # descriptor scale: norm ~1
    store.enroll(Resident("R-7", "Grace"), [(vec, "sha")])
    g = store.load()
    assert g.search(vec).resident_id == "R-7"
    assert g.search(vec).distance == pytest.approx(0, abs=1e-3)
    store.db.close()
    raw = (tmp_path / "k.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("k.db-*"))
    assert vec.tobytes() not in raw
    assert vec.astype("<f4").tobytes()[:32] not in raw


def test_template_bound_to_its_resident(tmp_path):
    store = _store(tmp_path)
    vec = np.ones(128, np.float32)
    store.enroll(Resident("a", "A"), [(vec, None)])
    store.enroll(Resident("b", "B"), [])
    # Move a's sealed template to b: it must not open.
    store.db.execute("UPDATE templates SET resident_id = 'b'")
    with pytest.raises(StorageError, match="does not open"):
        store.load()


def test_wrong_template_key_fails(tmp_path):
    store = _store(tmp_path)
    store.enroll(Resident("a", "A"), [(np.ones(128, np.float32), None)])
    other = TemplateCipher.from_file(tmp_path / "other.key")
    with pytest.raises(StorageError):
        GalleryStore(store.db, other).load()


def test_template_key_readable_by_others_is_refused(tmp_path):
    key = tmp_path / "template.key"
    TemplateCipher.from_file(key)
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="accessible by others"):
        TemplateCipher.from_file(key)


def test_erase_removes_resident_and_templates(tmp_path):
    store = _store(tmp_path)
    store.enroll(Resident("a", "A"), [(np.ones(128, np.float32), None)])
    assert store.erase("a")
    assert store.load().template_count == 0
    assert not store.erase("a")


@pytest.mark.parametrize("bad", [np.zeros(127, np.float32), np.full(128, np.nan, np.float32)])
def test_bad_vectors_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        _store(tmp_path).add_template("a", bad)
