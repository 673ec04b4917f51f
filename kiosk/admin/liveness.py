"""``kiosk-admin evaluate-liveness``: APCER per attack type and BPCER on a clip set.

Terms of ISO/IEC 30107-3: APCER is the share of attack presentations (of
one type) accepted as bona fide; BPCER the share of bona fide (genuine)
presentations classified as attacks (SPOOF). A genuine visit left at "look
at the camera" (not enough evidence either way) is a non-response: it is
reported as BPNRR, and the share of genuine clips not accepted for either
reason beside it. A clip in which no face was ever found is a failure to
acquire: it is counted apart and left out of every rate.

Each clip is played as one visit, the way the recogniser would: the check
sees every frame, is first asked once ``match.votes_k`` usable frames could
have voted, then on each frame until it answers, and finally at the end of
the clip.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..capture.base import Frame
from ..capture.folder import decode_image, list_images
from ..config import KioskConfig
from ..evaluation.attacks import ATTACK_TYPES, ClipEntry, read_manifest
from ..match.decide import VoteBox
from ..match.detect import FaceDetector, to_grey
from ..match.liveness import Liveness
from ..match.track import Track
from .common import config_of
from .extra import need, tqdm

ACCEPTED, SPOOF, LOOK, NO_FACE = "live", "spoof", "look_at_camera", "no_face"


@dataclass
class ClipResult:
    clip: ClipEntry
    verdict: str  # ACCEPTED, SPOOF, LOOK or NO_FACE
    decided_after_s: float | None = None
    scores: dict = field(default_factory=dict)
    reason: str | None = None


def run_clip(root: Path, clip: ClipEntry, cfg: KioskConfig, detector: FaceDetector, check: Liveness) -> ClipResult:
    """One clip as one visit; the check's verdict."""
    files = list_images(root / clip.path)
    track = None
    result = None
    for i, path in enumerate(files):
        image = decode_image(path)
        if image is None:
            continue
        frame = Frame(image=image, timestamp=i / clip.fps, index=i, source=clip.path)
        grey = to_grey(image)
        faces = detector.detect(image, grey)
        if not faces:
            continue
        face = faces[0]
        if track is None:
            track = Track(id=1, box=face.box, first_seen=frame.timestamp, last_seen=frame.timestamp, votes=VoteBox(cfg.match))
        track.frames += 1
        track.good_frames += face.ok
        track.last_seen = frame.timestamp
        check.observe(track, frame, grey, face)
        if track.good_frames >= cfg.match.votes_k:
            result = check.assess(track, final=False)
            if result is not None:
                break
    if track is None:
        return ClipResult(clip, NO_FACE)
    if result is None:
        result = check.assess(track, final=True)
    verdict = ACCEPTED if result.live else SPOOF if result.live is False else LOOK
    return ClipResult(clip, verdict, round(track.last_seen - track.first_seen, 3), dict(result.scores), result.reason)


def error_rates(results: list[ClipResult]) -> dict:
    """APCER per attack type, BPCER, and the counts behind them."""
    out = {"apcer": {}, "bpcer": None, "bpnrr": None, "genuine_not_accepted": None, "counts": {}}
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        key = "genuine" if r.clip.label == "genuine" else r.clip.attack_type
        groups.setdefault(key, []).append(r)
    for key, rs in sorted(groups.items()):
        acquired = [r for r in rs if r.verdict != NO_FACE]
        c = {v: sum(r.verdict == v for r in rs) for v in (ACCEPTED, SPOOF, LOOK, NO_FACE)}
        c["clips"] = len(rs)
        out["counts"][key] = c
        if key == "genuine":
            n = len(acquired)
            out["bpcer"] = round(sum(r.verdict == SPOOF for r in acquired) / n, 4) if n else None
            out["bpnrr"] = round(sum(r.verdict == LOOK for r in acquired) / n, 4) if n else None
            out["genuine_not_accepted"] = round(sum(r.verdict != ACCEPTED for r in acquired) / n, 4) if n else None
        else:
            out["apcer"][key] = round(sum(r.verdict == ACCEPTED for r in acquired) / len(acquired), 4) if acquired else None
    known = [v for v in out["apcer"].values() if v is not None]
    out["max_apcer"] = max(known) if known else None
    return out


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate-liveness",
        help="APCER per attack type and BPCER of the liveness check on a clip set",
        description="Play every clip of DIR (made by make-attacks; DIR/manifest.json) through face detection and the "
        "configured liveness check, one visit per clip, and report ISO/IEC 30107-3 error rates: APCER per attack type "
        "(attacks accepted as live), BPCER (genuine clips refused as spoof) and BPNRR (genuine clips left at 'look "
        "at the camera'). Clips with no face found are failures to acquire, counted apart.",
    )
    p.add_argument("directory", metavar="DIR", help="a clip set made by make-attacks (with manifest.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (with per-clip scores)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the score distributions and error rates as PNG")
    p.set_defaults(func=cmd_evaluate_liveness)


def evaluate_dir(root: Path, cfg: KioskConfig, progress: bool = False) -> tuple[list[ClipResult], dict]:
    clips = read_manifest(root)
    detector = FaceDetector(cfg.detect)
    check = Liveness(cfg.liveness)
    results = []
    for clip in tqdm(clips, desc="clips", unit="clip", file=sys.stderr, disable=not progress or None):
        results.append(run_clip(root, clip, cfg, detector, check))
    return results, error_rates(results)


def cmd_evaluate_liveness(args) -> int:
    need("evaluate-liveness", "tqdm", *(["matplotlib"] if args.plot else []))
    cfg = config_of(args)
    root = Path(args.directory)
    if not root.is_dir():
        raise SystemExit(f"kiosk-admin: {root}: not a folder")
    try:
        results, rates = evaluate_dir(root, cfg, progress=True)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"kiosk-admin: {e}") from None
    report = {"directory": str(root), **rates, "settings": cfg.liveness.model_dump()}
    if args.plot:
        plot_liveness(results, rates, args.plot)
        report["plot"] = str(args.plot)
    if args.json:
        report["clips"] = [
            {"path": r.clip.path, "label": r.clip.label, "attack_type": r.clip.attack_type, "source": r.clip.source,
             "verdict": r.verdict, "reason": r.reason, "decided_after_s": r.decided_after_s, "scores": r.scores}
            for r in results
        ]
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _print_text(r: dict) -> None:
    print(f"{r['directory']}: liveness (ISO/IEC 30107-3 terms)")
    for key, c in r["counts"].items():
        rate = f"BPCER {_pct(r['bpcer'])}" if key == "genuine" else f"APCER {_pct(r['apcer'].get(key))}"
        if key == "genuine":
            rate += f", BPNRR {_pct(r['bpnrr'])}"
        print(f"  {key:<10} {c['clips']:>3} clips: {rate:<14} live {c[ACCEPTED]}, spoof {c[SPOOF]}, "
              f"look-at-camera {c[LOOK]}, no face (not acquired) {c[NO_FACE]}")
    print(f"  worst APCER {_pct(r['max_apcer'])}, BPCER {_pct(r['bpcer'])}, "
          f"genuine not accepted (spoof or look-at-camera) {_pct(r['genuine_not_accepted'])}")
    if "plot" in r:
        print(f"plot: {r['plot']}")


def plot_liveness(results: list[ClipResult], rates: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    kinds = ["genuine", *[t for t in ATTACK_TYPES if t in rates["apcer"]], *[t for t in rates["apcer"] if t not in ATTACK_TYPES]]
    for i, k in enumerate(kinds):
        ys = [r.scores.get("score", 0.0) for r in results if r.verdict != NO_FACE and ("genuine" if r.clip.label == "genuine" else r.clip.attack_type) == k]
        xs = i + np.random.default_rng(i).uniform(-0.15, 0.15, len(ys))
        ax1.scatter(xs, ys, s=14, alpha=0.7)
    ax1.set_xticks(range(len(kinds)), kinds)
    ax1.set_ylabel("combined liveness score")
    ax1.set_title("liveness score per clip")
    ax1.grid(True, axis="y", alpha=0.3)
    bars = [("BPCER", rates["bpcer"]), ("BPNRR", rates["bpnrr"])] + [(f"APCER {k}", v) for k, v in rates["apcer"].items()]
    ax2.bar([b[0] for b in bars], [100 * (b[1] or 0) for b in bars], color=["tab:blue", "tab:cyan"] + ["tab:red"] * (len(bars) - 2))
    ax2.axhline(5, color="k", ls="--", lw=1, label="5% goal")
    ax2.set_ylabel("%")
    ax2.set_title("error rates")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
