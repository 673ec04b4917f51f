"""How well the liveness check tells people from presentation attacks, on a clip set.

Terms of ISO/IEC 30107-3: APCER is the share of attack presentations (of
one type) accepted as bona fide; BPCER the share of bona fide (genuine)
presentations classified as attacks (SPOOF). A genuine visit left at "look
at the camera" (not enough evidence either way) is a non-response: it is
reported as BPNRR, and the share of genuine clips not accepted for either
reason beside it. A clip in which no face was ever found is a failure to
acquire: it is counted apart and left out of every rate.

Each clip is played as one visit at the times its frames were taken, the way
the recogniser does it: the check sees every frame with a face, is first asked
once ``match.votes_k`` usable frames could have voted, then on each frame
until it answers. An unsure answer prompts the resident to look at the camera
and the visit goes on for one more ``liveness.max_wait_s``; still unsure then,
or at the end of the clip, it is LOOK_AT_CAMERA.

Several variants of the check (cues switched off, for an ablation) can be
played over the same frames in one pass: they share what was observed and
each keeps its own verdict.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..capture.base import Frame
from ..capture.folder import decode_image
from ..config import KioskConfig, LivenessSettings
from ..match.challenge import Challenge
from ..match.recognizer import challenged
from ..match.decide import VoteBox
from ..match.detect import SceneDetector, to_grey
from ..match import models
from ..match.liveness import CUES, AppearanceModel, Liveness
from ..match.track import Track
from .livesets import GENUINE, LiveClip

ACCEPTED, SPOOF, LOOK, NO_FACE = "live", "spoof", "look_at_camera", "no_face"
VERDICTS = (ACCEPTED, SPOOF, LOOK, NO_FACE)
FULL = "all cues"


@dataclass
class ClipResult:
    clip: LiveClip
    verdict: str  # ACCEPTED, SPOOF, LOOK or NO_FACE
    decided_after_s: float | None = None
    scores: dict = field(default_factory=dict)
    reason: str | None = None
    frames_seen: int = 0  # frames with a face


def variant_name(off: frozenset[str]) -> str:
    if not off:
        return FULL
    on = [c for c in CUES if c not in off]
    if len(on) == 1:
        return f"only {on[0]}"
    if len(off) == 1:
        return f"without {next(iter(off))}"
    return "only " + "+".join(on)


#: The ablation: every cue alone switched off, the old motion-and-texture cues without appearance, appearance alone.
ABLATION = (frozenset(), *(frozenset({c}) for c in CUES), frozenset(set(CUES) - {"appearance"}))


class _Visit:
    """One variant's progress through one clip.

    With ``liveness.active_check`` the visit asks for head turns as the daemon does (the directions drawn
    from ``rng`` before any frame of the turns is seen); a recording cannot react, so it passes only where
    it happens to turn as asked."""

    def __init__(self, check: Liveness, settings: LivenessSettings, rng=None):
        self.check, self.settings, self.rng = check, settings, rng
        self.max_wait_s = settings.max_wait_s
        self.result = None
        self.prompted_at: float | None = None
        self.at: float | None = None
        self.challenge: Challenge | None = None

    def ask(self, track: Track, t: float) -> None:
        if self.result is not None:
            return
        if self.challenge is not None:
            self.result = challenged(self.challenge, self.check, track, t, final=False, max_wait_s=self.max_wait_s)
            self.at = t
            return
        r = self.check.assess(track, final=False)
        s = self.settings
        if (s.active_check and (r is None or r.live is None) and t - track.first_seen >= s.active_after_s):
            self.challenge = Challenge.start(s, t, self.check.yaws(track), self.rng)
            return
        if r is None:
            return
        if r.live is None:  # unsure: prompt, and give the visit one more wait
            if self.prompted_at is None:
                self.prompted_at = t
            if t - self.prompted_at < self.max_wait_s:
                return
        self.result, self.at = r, t

    def finish(self, track: Track) -> None:
        if self.result is None and self.challenge is not None:
            self.result = challenged(self.challenge, self.check, track, track.last_seen, final=True,
                                     max_wait_s=self.max_wait_s)
            self.at = track.last_seen
        elif self.result is None:
            self.result, self.at = self.check.assess(track, final=True), track.last_seen


def play_clip(clip: LiveClip, cfg: KioskConfig, checks: list[Liveness], *, every: int = 1,
              seed: int = 0) -> list[ClipResult]:
    """``clip`` as one visit, once per check in ``checks`` (the first one observes); their verdicts."""
    detector = SceneDetector(cfg.detect)
    track = None
    # The active check's directions: a generator per clip, seeded by its name (drawn before its frames are
    # seen, so a recording passes only if it happens to turn as asked; the same figures on every run).
    visits = [_Visit(c, cfg.liveness, random.Random(f"{seed}:{clip.id}")) for c in checks]
    seen = 0
    for i, (path, t) in enumerate(clip.frames[::every]):
        image = decode_image(path)
        if image is None:
            continue
        grey = to_grey(image)
        faces = detector.detect(image, grey)
        if not faces:
            continue
        # The visitor is the largest face at first; then the face that overlaps them most, as the
        # tracker follows a visit (someone walking past is not them).
        face = faces[0] if track is None else max(faces, key=lambda f: (f.box.iou(track.box), f.box.width))
        seen += 1
        if track is None:
            track = Track(id=1, box=face.box, first_seen=t, last_seen=t, votes=VoteBox(cfg.match))
        track.frames += 1
        track.good_frames += face.ok
        track.last_seen, track.box = t, face.box
        checks[0].observe(track, Frame(image=image, timestamp=t, index=i, source=clip.id), grey, face)
        if track.good_frames >= cfg.match.votes_k:
            for v in visits:
                v.ask(track, t)
        if all(v.result is not None for v in visits):
            break
    if track is None:
        return [ClipResult(clip, NO_FACE) for _ in checks]
    out = []
    for v in visits:
        v.finish(track)
        r = v.result
        verdict = ACCEPTED if r.live else SPOOF if r.live is False else LOOK
        out.append(ClipResult(clip, verdict, round(v.at - track.first_seen, 3), dict(r.scores), r.reason, seen))
    return out


def evaluate(clips: list[LiveClip], cfg: KioskConfig, *, variants=(frozenset(),), every: int = 1,
             progress: bool = False) -> dict[str, list[ClipResult]]:
    """Every clip through each variant of the configured check (cues in a variant's set are off)."""
    shape = models.load("landmarks68")
    model = AppearanceModel.load() if cfg.liveness.appearance else None
    checks = [Liveness(cfg.liveness, shape_predictor=shape, appearance=model, off=off) for off in variants]
    results: dict[str, list[ClipResult]] = {variant_name(v): [] for v in variants}
    if progress:
        from tqdm import tqdm  # the admin extra: evaluate-liveness checks it is installed

        clips = tqdm(clips, desc="clips", unit="clip", file=sys.stderr, disable=None)
    for clip in clips:
        for name, r in zip(results, play_clip(clip, cfg, checks, every=every)):
            results[name].append(r)
    return results


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def group_of(clip: LiveClip) -> str:
    return GENUINE if clip.label == GENUINE else (clip.attack_type or "attack")


def error_rates(results: list[ClipResult]) -> dict:
    """APCER per attack type (and per medium, support and their combinations where the set has them), BPCER,
    BPNRR, the counts behind them, and which cues had evidence, per group."""
    out = {"apcer": {}, "apcer_by": {}, "bpcer": None, "bpnrr": None, "genuine_not_accepted": None, "counts": {},
           "cues": {}, "decided_after_s": {}, "challenge": {}}
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        groups.setdefault(group_of(r.clip), []).append(r)
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0] != GENUINE, kv[0])):
        acquired = [r for r in rs if r.verdict != NO_FACE]
        c = Counter(r.verdict for r in rs)
        out["counts"][key] = {**{v: c[v] for v in VERDICTS}, "clips": len(rs)}
        out["cues"][key] = cue_summary(acquired)
        times = [r.decided_after_s for r in acquired if r.decided_after_s is not None]
        out["decided_after_s"][key] = round(float(np.median(times)), 2) if times else None
        # The active check: the clips that were asked for turns, and how each ended.
        asked = Counter(r.reason if r.verdict == LOOK or r.reason == "passed" else r.verdict
                        for r in acquired if "challenge_turns" in r.scores)
        out["challenge"][key] = dict(sorted(asked.items()))
        if key == GENUINE:
            n = len(acquired)
            out["bpcer"] = _rate(c[SPOOF], n)
            out["bpnrr"] = _rate(c[LOOK], n)
            out["genuine_not_accepted"] = _rate(c[SPOOF] + c[LOOK], n)
        else:
            out["apcer"][key] = _rate(c[ACCEPTED], len(acquired))
    attacks = [r for r in results if r.clip.label != GENUINE and r.verdict != NO_FACE]
    for attr in ("medium", "support"):
        vals = sorted({getattr(r.clip, attr) for r in attacks} - {None})
        if vals:
            out["apcer_by"][attr] = {v: _rate(sum(r.verdict == ACCEPTED for r in attacks if getattr(r.clip, attr) == v),
                                              sum(getattr(r.clip, attr) == v for r in attacks)) for v in vals}
    combos: dict[str, list[ClipResult]] = {}
    for r in attacks:
        if r.clip.medium or r.clip.support:
            combos.setdefault("/".join(x for x in (group_of(r.clip), r.clip.medium, r.clip.support) if x), []).append(r)
    if len(combos) > 1:
        out["apcer_by"]["type/medium/support"] = {k: _rate(sum(r.verdict == ACCEPTED for r in v), len(v))
                                                  for k, v in sorted(combos.items())}
    known = [v for v in out["apcer"].values() if v is not None]
    out["max_apcer"] = max(known) if known else None
    return out


def cue_summary(results: list[ClipResult]) -> dict:
    """Per cue, how many clips it spoke for (evidence > 0) and against (< 0) at the verdict."""
    out = {}
    for cue in CUES:
        vals = [r.scores.get(cue, 0.0) for r in results]
        out[cue] = {"live": sum(v > 0 for v in vals), "attack": sum(v < 0 for v in vals)}
    out["clips"] = len(results)
    out["median_frames"] = float(np.median([r.frames_seen for r in results])) if results else 0.0
    return out


def median_fps(clips: list[LiveClip], every: int = 1) -> dict[str, float]:
    """The clips' real frame rate, per group (after keeping every ``every``-th frame)."""
    groups: dict[str, list[float]] = {}
    for c in clips:
        groups.setdefault(group_of(c), []).append(c.fps / every)
    return {k: round(float(np.median(v)), 2) for k, v in sorted(groups.items())}


def clip_rows(results: list[ClipResult]) -> list[dict]:
    return [{"clip": r.clip.id, "label": r.clip.label, "attack_type": r.clip.attack_type, "medium": r.clip.medium,
             "support": r.clip.support, "subject": r.clip.subject, "verdict": r.verdict, "reason": r.reason,
             "decided_after_s": r.decided_after_s, "frames_seen": r.frames_seen, "scores": r.scores} for r in results]


def plot(results: list[ClipResult], rates: dict, path: Path, title: str = "", offset: float | None = None) -> None:
    """Per group, each clip's combined score and its appearance log-odds (coloured by verdict); the error rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.8))
    kinds = list(rates["counts"])
    colour = {ACCEPTED: "tab:green", SPOOF: "tab:red", LOOK: "tab:orange"}
    for i, k in enumerate(kinds):
        rs = [r for r in results if r.verdict != NO_FACE and group_of(r.clip) == k]
        xs = i + np.random.default_rng(i).uniform(-0.18, 0.18, len(rs))
        cs = [colour[r.verdict] for r in rs]
        ax1.scatter(xs, [r.scores.get("score", 0.0) for r in rs], s=12, alpha=0.7, c=cs)
        ax2.scatter(xs, [float(np.clip(r.scores.get("appearance_logit", np.nan), -15, 15)) for r in rs], s=12, alpha=0.7, c=cs)
    for ax, label in ((ax1, "combined score"), (ax2, "appearance: mean log-odds of live (clipped to ±15)")):
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    if offset is not None:
        ax2.axhline(offset, color="k", ls=":", lw=1, label="appearance_offset")
        ax2.legend(loc="lower left")
    ax1.set_title((f"{title}: " if title else "") + "per clip (green live, red spoof, orange look)")
    ax2.set_title("the appearance cue per clip")
    bars = [("BPCER", rates["bpcer"]), ("BPNRR", rates["bpnrr"])] + [(f"APCER\n{k}", v) for k, v in rates["apcer"].items()]
    ax3.bar([b[0] for b in bars], [100 * (b[1] or 0) for b in bars],
            color=["tab:blue", "tab:cyan"] + ["tab:red"] * (len(bars) - 2))
    ax3.axhline(5, color="k", ls="--", lw=1, label="5% goal")
    ax3.set_ylabel("%")
    ax3.set_title("error rates (ISO/IEC 30107-3)")
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
