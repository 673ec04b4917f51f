"""From measured costs to the time a resident waits, and to settings for this device.

The time from a face appearing to the door decision is not computed by a
formula: the real :class:`~kiosk.match.recognizer.Recognizer` (its tracker,
votes, descriptor spacing, liveness waits and prompt) and the real
:class:`~kiosk.match.detect.SceneDetector` (when the far pass runs) are run
on a virtual clock, with stand-ins for the expensive parts that cost what
was measured. The match loop is modelled as the daemon runs it: frames are
captured every ``1 / capture.fps`` seconds, the loop always takes the newest
one (older ones are dropped), and every frame costs the motion gate, the
grey copy, detection and what the recogniser does with it; the decision is
committed to the outbox before the door opens.

Liveness is modelled as its settings describe it: no verdict before
``liveness.min_frames`` frames; a live face is judged live as soon as that
(the earliest a resident can be let in), an unsure one is asked to look at
the camera after ``max_wait_s`` and refused after as long again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..capture.base import Frame
from ..config import KioskConfig
from ..match.detect import Box, Face, SceneDetector
from ..gallery.store import Gallery, Resident
from ..gallery.templates import DIMENSIONS
from ..match.recognizer import LivenessResult, Recognizer
from .measure import Costs, smallest_face_px, useful_far_scale

#: Frame rates considered for ``capture.fps``.
FPS_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
#: A frame rate within this share of the best time to the door is as good.
TOLERANCE = 0.05
#: Virtual seconds after which a visit that has not been decided is given up.
HORIZON_S = 60.0
#: The face appears at these points of a frame interval (the result is their mean).
PHASES = (0.125, 0.375, 0.625, 0.875)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def spend(self, ms: float) -> None:
        self.now += ms / 1000.0


class _Pass:
    """A detection pass that costs what was measured and finds the face or not."""

    def __init__(self, clock: _Clock, ms: float, face: Face | None):
        self.clock, self.ms, self.face = clock, ms, face
        self.runs = 0

    def detect(self, image, grey=None) -> list[Face]:
        self.clock.spend(self.ms)
        self.runs += 1
        return [self.face] if self.face is not None else []


class _Embedder:
    def __init__(self, clock: _Clock, ms: float, descriptor: np.ndarray):
        self.clock, self.ms, self.descriptor = clock, ms, descriptor
        self.calls = 0

    def embed(self, rgb, face, shape=None, jitter=None) -> np.ndarray:
        self.clock.spend(self.ms)
        self.calls += 1
        return self.descriptor


class _Gallery(Gallery):
    """The resident and one other, searched at the measured cost."""

    def __init__(self, clock: _Clock, ms: float):
        a, b = np.zeros(DIMENSIONS, np.float32), np.zeros(DIMENSIONS, np.float32)
        a[0], b[1] = 1.0, 1.0
        super().__init__({"resident": Resident("resident", "r"), "other": Resident("other", "o")},
                         ["resident", "other"], np.stack([a, b]), version="bench")
        self.clock, self.ms = clock, ms

    def search(self, descriptor, now=None, **how):
        self.clock.spend(self.ms)
        return super().search(descriptor, now, **how)


class _Liveness:
    """Liveness as its settings describe it (module docstring), at the measured cost per frame."""

    def __init__(self, settings, clock: _Clock, ms: float, live: bool):
        self.settings, self.clock, self.ms, self.live = settings, clock, ms, live

    def observe(self, track, frame, grey, face) -> None:
        self.clock.spend(self.ms)
        ev = track.extras.setdefault("bench-liveness", {"first": frame.timestamp, "frames": 0})
        ev["frames"] += 1
        ev["last"] = frame.timestamp

    def yaws(self, track) -> list[tuple[float, float]]:
        """No head pose is modelled: an active check asked of this face is never followed (it times out)."""
        return []

    def assess(self, track, final: bool) -> LivenessResult | None:
        ev = track.extras.get("bench-liveness", {"frames": 0, "first": 0.0, "last": 0.0})
        if not final and ev["frames"] < self.settings.min_frames:
            return None
        if self.live:
            return LivenessResult(True)
        if not final and ev["last"] - ev["first"] < self.settings.max_wait_s:
            return None
        return LivenessResult(None, reason="insufficient_liveness_evidence")


@dataclass(frozen=True)
class Visit:
    """One modelled visit: how long from the face appearing to the door decision, and why."""

    scenario: str  # "near": the near pass finds the face; "far": only the far pass does
    liveness: str  # "live" (judged as soon as allowed), "unsure" or "off"
    fps: float
    far_scale: float
    seconds: float | None  # face appearing → decision committed (mean over phases); None: never
    outcome: str | None
    frames: int  # frames processed from the face appearing up to the decision
    descriptor_frames: list[int]  # which of them computed a descriptor (1-based)
    period_ms: float  # mean time between the frames the loop processed while the face was tracked
    prompt_s: float | None = None  # when the resident was asked to look at the camera


def simulate(cfg: KioskConfig, costs: Costs, *, fps: float, far_scale: float, scenario: str = "near",
             liveness: str = "live") -> Visit:
    """Model one visit at ``fps`` and ``far_scale`` (see the module docstring)."""
    runs = [_one(cfg, costs, fps, far_scale, scenario, liveness, phase) for phase in PHASES]
    done = [r for r in runs if r.seconds is not None]
    first = done[0] if done else runs[0]
    mean = lambda xs: round(float(np.mean(xs)), 3) if xs else None  # noqa: E731
    return Visit(scenario, first.liveness, fps, far_scale, mean([r.seconds for r in done]) if len(done) == len(runs)
                 else None, first.outcome, first.frames, first.descriptor_frames,
                 round(float(np.mean([r.period_ms for r in runs])), 1),
                 mean([r.prompt_s for r in runs if r.prompt_s is not None]))


def _one(cfg: KioskConfig, costs: Costs, fps: float, far_scale: float, scenario: str, liveness: str,
         phase: float) -> Visit:
    # The modelled face passes the door's own gates (too dark, turned away): they judge pixels this model has not,
    # and the landmark fit they need is counted in the liveness stage's cost.
    cfg = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"far_scale": far_scale, "min_brightness": 0,
                                                                         "max_yaw": 180.0, "max_pitch": 180.0}),
                                 "capture": cfg.capture.model_copy(update={"fps": fps})})
    clock = _Clock()
    face = Face(box=Box(top=100, right=300, bottom=300, left=100), score=1.0, sharpness=100.0, edge_distance=0.1)
    detector = SceneDetector(cfg.detect)  # the real rules for when the far pass runs
    detector.near = _Pass(clock, costs.near.median_ms, face if scenario == "near" else None)
    if detector.far is not None:
        far_ms = costs.far[far_scale].median_ms if far_scale in costs.far else _scaled_far(costs, far_scale)
        detector.far = _Pass(clock, far_ms, face)
    descriptor = np.zeros(DIMENSIONS, np.float32)
    descriptor[0], descriptor[2] = 1.0, 0.3  # 0.3 from the resident, far from anyone else
    embedder = _Embedder(clock, costs.descriptor.median_ms, descriptor)
    live = None
    if cfg.liveness.enabled and liveness != "off":
        ms = costs.liveness.median_ms if costs.liveness is not None else 0.0
        live = _Liveness(cfg.liveness, clock, ms, liveness == "live")
    prompts: list[float] = []
    # The resident's first prompt: "look at the camera", or the active check's first head turn.
    rec = Recognizer(cfg, _Gallery(clock, costs.search.median_ms), detector=detector, embedder=embedder,
                     liveness=live, on_prompt=lambda track, result: prompts.append(clock.now),
                     on_instruction=lambda track, reason: reason.startswith("turn_") and prompts.append(clock.now),
                     wall_clock=lambda: 0.0)
    period = 1.0 / fps
    capture_ms = costs.capture_cpu.median_ms
    image = np.zeros((8, 8, 3), np.uint8)
    qr_every = cfg.qr_credential.every_n_frames if costs.qr is not None else 0
    last = -1
    processed = 0
    descriptor_frames: list[int] = []
    now = 0.0
    tracked_from, tracked = None, 0  # when the visit's first frame began, and its frames so far
    while now < HORIZON_S:
        # The newest frame captured (at phase·period + k·period) and converted by now; else wait for the next.
        k = math.floor((now - capture_ms / 1000 - phase * period) / period + 1e-9)
        if k <= last:
            k = last + 1
            now = phase * period + k * period + capture_ms / 1000
        clock.now = start = now
        clock.spend(costs.motion.median_ms + costs.grey.median_ms)
        before = embedder.calls
        decisions = rec.process(Frame(image, phase * period + k * period, k))
        if qr_every and processed % qr_every == 0:
            clock.spend(costs.qr.median_ms)
        processed += 1
        if embedder.calls > before:
            descriptor_frames.append(processed)
        if rec.tracker.tracks or decisions:
            tracked_from = start if tracked_from is None else tracked_from
            tracked += 1
        last, now = k, clock.now
        # From one frame's start to the next's, while the face was tracked (one frame: its own time).
        period_ms = 1000 * ((start - tracked_from) / (tracked - 1) if tracked > 1 else now - start) if tracked else 0.0
        if decisions:
            clock.spend(costs.commit.median_ms)  # committed first: then the door
            return Visit(scenario, "off" if live is None else liveness, fps, far_scale, clock.now,
                         decisions[0].outcome.value, processed, descriptor_frames, period_ms,
                         prompts[0] if prompts else None)
    return Visit(scenario, "off" if live is None else liveness, fps, far_scale, None, None, processed,
                 descriptor_frames, period_ms, prompts[0] if prompts else None)


def _scaled_far(costs: Costs, scale: float) -> float:
    """A far pass not measured: from the nearest measured one, in proportion to the pixels."""
    if not costs.far:
        return costs.near.median_ms * 4
    s = min(costs.far, key=lambda x: abs(x - scale))
    return costs.far[s].median_ms * (scale / s) ** 2


# -- recommendations ---------------------------------------------------------------


@dataclass
class Plan:
    """Settings recommended for this device, why, and the time to the door with them."""

    fps: float
    far_scale: float
    motion_enabled: bool
    hold_s: float
    budget_ms: float  # longest time between processed frames the visit rules allow
    reasons: dict[str, str]
    configured: dict[str, Visit]
    recommended: dict[str, Visit]
    fps_times: dict[float, float | None]  # time to the door (near face) at each frame rate tried
    far_periods: dict[float, float]  # ms between processed frames with a far face, per far scale
    idle_load: dict[str, float]  # share of one core with nobody at the door, gate on and off
    warnings: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, dict[str, object]]:
        return {"capture": {"fps": self.fps}, "detect": {"far_scale": self.far_scale},
                "motion": {"enabled": self.motion_enabled, "hold_s": self.hold_s}}

    def as_json(self) -> dict:
        d = asdict(self)
        d["fps_times"] = {f"{k:g}": v for k, v in self.fps_times.items()}
        d["far_periods"] = {f"{k:g}": v for k, v in self.far_periods.items()}
        d["settings"] = self.settings()
        return d


def frame_budget_ms(cfg: KioskConfig) -> float:
    """The longest time between processed frames that the visit rules allow.

    A visit ends after ``track.max_gap_s`` without its face: with frames
    further apart than half of that, one missed detection ends it. And
    liveness needs ``min_frames`` frames within its ``max_wait_s``, or an
    honest resident is asked to look at the camera.
    """
    budget = cfg.track.max_gap_s / 2
    if cfg.liveness.enabled:
        budget = min(budget, cfg.liveness.max_wait_s / cfg.liveness.min_frames)
    return 1000 * budget


def recommend(cfg: KioskConfig, costs: Costs) -> Plan:
    """``capture.fps``, ``detect.far_scale`` and the motion gate for the measured costs."""
    warnings: list[str] = []
    reasons: dict[str, str] = {}
    budget = frame_budget_ms(cfg)
    fps, times = _frame_rate(cfg, costs, budget, reasons, warnings)
    far_scale, periods = _far_scale(cfg, costs, fps, budget, reasons)
    near = simulate(cfg, costs, fps=fps, far_scale=far_scale)
    if near.period_ms > budget:
        warnings.append(f"even with a face at the door the loop takes {near.period_ms:.0f} ms a frame, over the "
                        f"{budget:.0f} ms the visit rules allow: visits may end early or wait on liveness "
                        "(a lower detect.scale or a faster device)")
    slowest = max([near.period_ms] + ([periods[far_scale]] if far_scale else []))
    enabled, hold, idle = _motion_gate(cfg, costs, fps, far_scale, slowest, reasons)
    return Plan(fps, far_scale, enabled, hold, round(budget, 1), reasons,
                _visits(cfg, costs, cfg.capture.fps, cfg.detect.far_scale), _visits(cfg, costs, fps, far_scale),
                times, periods, idle, warnings)


def _frame_rate(cfg: KioskConfig, costs: Costs, budget: float, reasons: dict, warnings: list):
    """The lowest rate at which a resident at the door is decided (within TOLERANCE) as soon as at any
    rate the camera delivers (a file: up to 30), preferably fast enough for the visit rules."""
    ceiling = min(FPS_CANDIDATES[-1], costs.delivered_fps * 1.05)
    least = 1000 / budget
    allowed = sorted({f for f in (*FPS_CANDIDATES, cfg.capture.fps) if f <= ceiling}) or [round(ceiling, 1)]
    candidates = [f for f in allowed if f >= least] or allowed
    times = {f: simulate(cfg, costs, fps=f, far_scale=cfg.detect.far_scale).seconds for f in candidates}
    decided = {f: t for f, t in times.items() if t is not None}
    if costs.live and costs.delivered_fps < least:
        warnings.append(f"the camera delivers {costs.delivered_fps:g} fps, fewer than the {least:g} the visit rules "
                        "need (track.max_gap_s, liveness.max_wait_s / min_frames)")
    if not decided:
        reasons["capture.fps"] = "no rate tried let a visit be decided: kept as configured"
        warnings.append("no frame rate lets a visit be decided within a minute on this device")
        return cfg.capture.fps, times
    best = min(decided.values())
    fps = min(f for f, t in decided.items() if t <= best * (1 + TOLERANCE))
    reasons["capture.fps"] = (f"a resident at the door is decided in {decided[fps]:.2f} s at {fps:g} fps, "
                              f"within {TOLERANCE:.0%} of the soonest any rate up to {max(candidates):g} fps "
                              f"gives ({best:.2f} s); a faster camera costs capture work for less than that")
    return fps, times


def _far_scale(cfg: KioskConfig, costs: Costs, fps: float, budget: float, reasons: dict):
    """The largest useful far scale with which a face only the far pass finds stays within the frame budget."""
    periods: dict[float, float] = {}
    far_scale = 0.0
    useful = [s for s in sorted(costs.far, reverse=True) if s <= useful_far_scale(cfg.detect)]
    for scale in useful:
        periods[scale] = simulate(cfg, costs, fps=fps, far_scale=scale, scenario="far").period_ms
        if periods[scale] <= budget and far_scale == 0.0:
            far_scale = scale
    if far_scale:
        reasons["detect.far_scale"] = (
            f"with a face only the far pass finds, a frame every {periods[far_scale]:.0f} ms, within the "
            f"{budget:.0f} ms the visit rules allow; it finds faces from {smallest_face_px(cfg.detect, far_scale)} px")
    elif useful:
        reasons["detect.far_scale"] = (
            f"every far pass tried makes a far visit's frames {min(periods.values()):.0f} ms or more apart, over the "
            f"{budget:.0f} ms the visit rules allow: off (0)")
    else:
        reasons["detect.far_scale"] = "the near pass already finds every face the quality gate takes: off (0)"
    return far_scale, periods


def _motion_gate(cfg: KioskConfig, costs: Costs, fps: float, far_scale: float, slowest: float, reasons: dict):
    """On when the gate costs less than the detection it saves with nobody there; held at least twice the
    slowest frame, or a resident standing still loses the gate between two frames."""
    searching = costs.near.median_ms + (costs.far[far_scale].median_ms / cfg.detect.far_every if far_scale else 0.0)
    per_frame = costs.capture_cpu.median_ms + costs.grey.median_ms
    idle = {"gate_on": round((per_frame + costs.motion.median_ms) * fps / 1000, 3),
            "gate_off": round((per_frame + searching) * fps / 1000, 3)}
    enabled = costs.motion.median_ms < searching
    hold = max(cfg.motion.hold_s, math.ceil(2 * slowest / 500) / 2)
    reasons["motion"] = (f"with nobody at the door the gate costs {costs.motion.median_ms:.1f} ms a frame against "
                         f"{searching:.1f} ms of detection: {idle['gate_on']:.0%} of a core instead of "
                         f"{idle['gate_off']:.0%}; held {hold:g} s, at least twice the slowest frame "
                         f"({slowest:.0f} ms)")
    return enabled, hold, idle


def _visits(cfg: KioskConfig, costs: Costs, fps: float, far_scale: float) -> dict[str, Visit]:
    out = {"near": simulate(cfg, costs, fps=fps, far_scale=far_scale)}
    if cfg.liveness.enabled:
        out["unsure"] = simulate(cfg, costs, fps=fps, far_scale=far_scale, liveness="unsure")
    if far_scale > cfg.detect.scale:
        out["far"] = simulate(cfg, costs, fps=fps, far_scale=far_scale, scenario="far")
    return out
