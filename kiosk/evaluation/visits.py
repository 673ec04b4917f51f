"""What residents experience at the door: each real visit played through the daemon's pipeline in real time.

Every visit's frames go through the daemon's recogniser (detection, the door's gates, tracking,
descriptors, votes), its liveness check and the active check, at the times they were taken, on this
machine: a frame that arrives while the previous one is still being processed waits, and when several
arrived meanwhile only the newest is taken (the capture queue's rule), so the door opens when the frame
that decided has been processed, not when it was taken. Detection's own cost included; decoding not (the
capture thread does that beside matching). The motion gate is left out (the visits start with a person).

The instructions the visit got are counted (guided capture's and the active check's turns): a recording
cannot react to them, so a visit passes the active check only where it happens to turn as asked.

Per visit the first decision counts (the first try). Reported, over the visits where a face was found:

- the share ACCEPTED (as the right resident) within 2 s and 5 s of the first face, and within 5 s with at
  most one prompt (the active check counts as one prompt, whatever its turns);
- BPNRR: LOOK_AT_CAMERA (liveness could not tell), and BPCER: SPOOF;
- FNIR: the face did not name the right resident (UNKNOWN, TOO_POOR, another resident, or no decision);
- time from the first face to the door for the accepted visits, p50 and p95.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..capture.base import Frame
from ..config import KioskConfig
from ..gallery.store import Gallery, Resident
from ..match import models
from ..match.challenge import LEFT, RIGHT
from ..match.decide import Outcome
from ..match.enroll import Enroller, select_diverse
from ..match.liveness import AppearanceModel, Liveness
from ..match.pose import LandmarkCache
from ..match.recognizer import Recognizer
from ..errors import EnrollmentRefused
from .visitsets import Person, Visit

#: Outcomes whose resident id says the face named them (liveness may still have kept the door shut).
_NAMED = (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.LOOK_AT_CAMERA, Outcome.SPOOF)


@dataclass
class VisitResult:
    visit: Visit
    outcome: str | None = None  # the first decision's outcome (None: no decision)
    reason: str | None = None
    right_resident: bool = False
    first_face: float | None = None  # frame time of the first face found
    door_at: float | None = None  # when the deciding frame was processed (frame time + waiting + processing)
    instructions: list[str] = field(default_factory=list)  # before the first decision
    challenged: bool = False
    processed: int = 0
    dropped: int = 0
    busy_s: float = 0.0

    @property
    def face_to_door(self) -> float | None:
        return None if self.door_at is None or self.first_face is None else round(self.door_at - self.first_face, 3)

    @property
    def prompts(self) -> int:
        """Prompt episodes: each guidance instruction one, the active check one (whatever its turns)."""
        return sum(1 for r in self.instructions if r not in (LEFT, RIGHT)) + self.challenged

    @property
    def accepted(self) -> bool:
        return self.outcome == Outcome.ACCEPTED.value and self.right_resident

    def as_json(self) -> dict:
        return {"visit": self.visit.id, "set": self.visit.set, "person": self.visit.person,
                "fps": round(self.visit.fps, 2), "outcome": self.outcome, "reason": self.reason,
                "right_resident": self.right_resident, "first_face_s": self.first_face,
                "face_to_door_s": self.face_to_door, "instructions": self.instructions, "prompts": self.prompts,
                "processed": self.processed, "dropped": self.dropped, "busy_s": round(self.busy_s, 3)}


def enroll(people: list[Person], cfg: KioskConfig) -> tuple[Gallery, list[str]]:
    """A gallery of ``people``, each from up to three diverse templates of their enrollment frames; and the
    people no frame could enroll."""
    enroller = Enroller(cfg.detect)
    residents, owners, vectors, refused = {}, [], [], []
    for p in people:
        templates = []
        for i, img in enumerate(p.enroll.images()):
            try:
                templates.append(enroller.from_image(img, f"{p.id}:{i}", f"{p.id} frame {i}"))
            except EnrollmentRefused:
                continue
        if not templates:
            refused.append(p.id)
            continue
        residents[p.id] = Resident(p.id, p.id)
        for t in select_diverse(templates):
            owners.append(p.id)
            vectors.append(t.vector)
    return Gallery(residents, owners, np.asarray(vectors, np.float32)), refused


def play(visit: Visit, cfg: KioskConfig, gallery: Gallery, shapes: LandmarkCache, appearance, rng, *,
         every_frame: bool = False) -> VisitResult:
    """One visit through a fresh recogniser (one site, one door), in real time on this machine.

    ``every_frame``: no frame is dropped while the previous one is processed (as on a machine fast enough
    for the camera's rate); the door still waits for the processing."""
    res = VisitResult(visit)
    check = Liveness(cfg.liveness, shape_predictor=shapes, appearance=appearance) if cfg.liveness.enabled else None
    def told(track, reason):  # instructions up to the first decision
        if res.outcome is None:
            res.instructions.append(reason)

    rec = Recognizer(cfg, gallery, liveness=check, shapes=shapes, rng=rng, on_instruction=told)
    images = list(visit.frames.images())
    times = visit.times[:len(images)]
    busy, i, n = float("-inf"), 0, len(images)

    def take(decisions, at):
        for d in decisions:
            if res.outcome is None:
                res.outcome, res.reason, res.door_at = d.outcome.value, d.reason, round(at, 3)
                res.right_resident = d.outcome in _NAMED and d.resident_id == visit.person

    while i < n:
        start = max(times[i], busy)
        j = i
        while not every_frame and j + 1 < n and times[j + 1] <= start:  # came while busy: the newest wins
            j += 1
        res.dropped += j - i
        i = j
        t0 = time.perf_counter()
        decisions = rec.process(Frame(image=images[i], timestamp=times[i], index=i, source=visit.id))
        decisions = rec.review(decisions, times[i])
        cost = time.perf_counter() - t0
        busy = start + cost
        res.busy_s += cost
        res.processed += 1
        if res.first_face is None and rec.stats.faces:
            res.first_face = times[i]
        take(decisions, busy)
        i += 1
    take(rec.review(rec.finish(), times[-1] if times else 0.0, final=True), max(busy, times[-1] if times else 0.0))
    res.challenged = sum(rec.stats.challenges.values()) > 0 or any(r in (LEFT, RIGHT) for r in res.instructions)
    return res


def evaluate(people: list[Person], visits: list[Visit], cfg: KioskConfig, *, seed: int = 0,
             every_frame: bool = False, progress: bool = False) -> tuple[list[VisitResult], list[str]]:
    """Enroll ``people``, play every visit; the results and the people that could not be enrolled."""
    gallery, refused = enroll(people, cfg)
    shapes = LandmarkCache(models.load("landmarks68"))
    appearance = AppearanceModel.load() if cfg.liveness.enabled and cfg.liveness.appearance else None
    todo = visits
    if progress:
        from tqdm import tqdm  # the admin extra

        todo = tqdm(visits, desc="visits", unit="visit", file=sys.stderr, disable=None)
    # The active check's directions: drawn per visit from a generator seeded by its name, before its frames
    # are seen (the kiosk draws from secrets); the same figures on every run.
    out = [play(v, cfg, gallery, shapes, appearance, random.Random(f"{seed}:{v.id}"), every_frame=every_frame)
           for v in todo]
    return out, refused


def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def summary(results: list[VisitResult]) -> dict:
    """The benchmark's figures over ``results`` (see the module docstring)."""
    acquired = [r for r in results if r.first_face is not None]
    n = len(acquired)
    times = [r.face_to_door for r in acquired if r.accepted]
    c = Counter(r.outcome or "none" for r in acquired)
    not_named = [r for r in acquired if not r.right_resident]
    fps = [r.visit.fps for r in results]
    return {
        "visits": len(results), "acquired": n, "people": len({r.visit.person for r in results}),
        "fps_median": round(float(np.median(fps)), 2) if fps else None,
        "accepted_2s": _share(sum(r.accepted and r.face_to_door <= 2 for r in acquired), n),
        "accepted_5s": _share(sum(r.accepted and r.face_to_door <= 5 for r in acquired), n),
        "accepted_5s_one_prompt": _share(sum(r.accepted and r.face_to_door <= 5 and r.prompts <= 1
                                             for r in acquired), n),
        "accepted": _share(sum(r.accepted for r in acquired), n),
        "bpnrr": _share(c[Outcome.LOOK_AT_CAMERA.value], n),
        "bpcer": _share(c[Outcome.SPOOF.value], n),
        "fnir": _share(len(not_named), n),
        "wrong_resident": sum(r.outcome is not None and not r.right_resident and r.outcome in [o.value for o in _NAMED]
                              for r in acquired),
        "face_to_door_p50": _pct(times, 50), "face_to_door_p95": _pct(times, 95),
        "outcomes": dict(sorted(c.items())),
        "challenged": sum(r.challenged for r in acquired),
        "instructions": dict(sorted(Counter(i for r in acquired for i in r.instructions).items())),
        "dropped_frames": sum(r.dropped for r in results), "processed_frames": sum(r.processed for r in results),
    }


def report(results: list[VisitResult]) -> dict:
    """The figures over all visits and per set."""
    sets = sorted({r.visit.set for r in results})
    return {"all": summary(results), "by_set": {s: summary([r for r in results if r.visit.set == s]) for s in sets}}


def plot(results: list[VisitResult], rep: dict, path: Path, title: str = "") -> None:
    """Face-to-door times of the accepted visits (per set, cumulative) and the first decisions' outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6))
    for s in rep["by_set"]:
        times = sorted(r.face_to_door for r in results if r.visit.set == s and r.accepted)
        total = sum(1 for r in results if r.visit.set == s and r.first_face is not None)
        if times and total:
            ax1.step([0, *times], [0, *[(k + 1) / total for k in range(len(times))]], where="post",
                     label=f"{s} ({rep['by_set'][s]['fps_median']} fps)")
    for x in (2, 5):
        ax1.axvline(x, color="k", ls=":", lw=1)
    ax1.set_xlabel("seconds from the first face to the door")
    ax1.set_ylabel("share of visits accepted")
    ax1.set_ylim(0, 1)
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="lower right")
    ax1.set_title((f"{title}: " if title else "") + "accepted at the first try")
    outcomes = sorted({o for v in rep["by_set"].values() for o in v["outcomes"]})
    bottom = np.zeros(len(rep["by_set"]))
    for o in outcomes:
        vals = np.array([v["outcomes"].get(o, 0) for v in rep["by_set"].values()], float)
        ax2.bar(list(rep["by_set"]), vals, bottom=bottom, label=o)
        bottom += vals
    ax2.set_ylabel("visits")
    ax2.set_title("first decision per visit")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
