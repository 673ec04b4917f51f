"""``kiosk-admin evaluate-visits``: the door-visit benchmark (a thin wrapper around :mod:`kiosk.evaluation.visits`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelUnavailable
from ..evaluation import visits as ev
from ..evaluation.visitsets import PARTS, SETS, read_visits
from ..extra import need
from .common import config_of


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate-visits",
        help="the door-visit benchmark: real visits through the daemon's pipeline in real time",
        description="Enroll each person of the visit sets from other frames than the ones judged, then play every "
        "visit through the daemon's recogniser, liveness check and active check at the times its frames were taken, "
        "in real time on this machine (a frame that comes while one is processed waits; only the newest is taken), "
        "counting the instructions given. Reports the share ACCEPTED at the first try within 2 s and 5 s (and within "
        "5 s with at most one prompt), BPNRR, BPCER, FNIR and the time from the first face to the door (p50, p95). "
        "Sets: NUAA and Replay-Attack genuine recordings as shared/data/recipes extracts them, and the shared videos "
        "(see docs/recognition.md).",
    )
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache/kiosk-data", metavar="DIR",
                   help="where the recipes extracted nuaa-dev and replay-attack-dev (default ~/.cache/kiosk-data)")
    p.add_argument("--data", type=Path, metavar="DIR", help="the shared test data (default $KIOSK_TEST_DATA, else "
                   "../shared/data)")
    p.add_argument("--sets", default=",".join(SETS), metavar="LIST",
                   help=f"which visit sets, comma-separated (default all: {','.join(SETS)})")
    p.add_argument("--part", choices=PARTS, default="dev",
                   help="people of the development part (default), the held-out part (report it once), or all")
    p.add_argument("--visits", metavar="TEXT", help="only the visits whose id holds TEXT (everyone is still enrolled)")
    p.add_argument("--every-frame", action="store_true", help="drop no frame while one is processed (as if this "
                   "machine kept up with every recording's rate); the door still waits for the processing")
    p.add_argument("--seed", type=int, default=0, help="seeds the active check's directions per visit (the kiosk "
                   "itself draws them from secrets)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (with every visit)")
    p.add_argument("--save-json", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write face-to-door times and outcomes as PNG")
    p.add_argument("--manifest", type=Path, metavar="CSV", help="only write the visit set's manifest to CSV (one "
                   "row per visit: set, person, part, frames, rate, duration, where its frames are, and what the "
                   "person is enrolled from) and print how far it falls short of 20 people and 50 visits at 10 fps")
    p.set_defaults(func=cmd_evaluate_visits)


def cmd_evaluate_visits(args) -> int:
    need("evaluate-visits", "tqdm", *(["matplotlib"] if args.plot else []))
    cfg = config_of(args)
    data = args.data or Path(os.environ.get("KIOSK_TEST_DATA", "../shared/data"))
    sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    if args.manifest:
        try:
            people, visits = read_visits(sets, cache=args.cache, data=data, part=args.part, only=args.visits)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"kiosk-admin: {e}") from None
        write_manifest(args.manifest, people, visits)
        return 0
    try:
        people, visits = read_visits(sets, cache=args.cache, data=data, part=args.part, only=args.visits)
        results, refused = ev.evaluate(people, visits, cfg, seed=args.seed, every_frame=args.every_frame,
                                        progress=True)
    except (FileNotFoundError, ValueError, ModelUnavailable) as e:
        raise SystemExit(f"kiosk-admin: {e}") from None
    rep = {"sets": list(sets), "part": args.part, "seed": args.seed, "every_frame": args.every_frame,
           "people_enrolled": len(people) - len(refused),
           "people_not_enrolled": refused, **ev.report(results)}
    if args.plot:
        ev.plot(results, rep, args.plot, title=f"door visits ({args.part})")
        rep["plot"] = str(args.plot)
    rep["visit_rows"] = [r.as_json() for r in results]
    if args.save_json:
        args.save_json.write_text(json.dumps(rep, indent=1) + "\n")
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_table(rep)
    return 0


def _where(frames, base: Path) -> str:
    """Where a recording's frames are, relative to the manifest's folder."""
    rel = lambda p: os.path.relpath(p, base)  # noqa: E731
    if frames.video is not None:
        stop = "" if frames.stop is None else frames.stop
        return f"{rel(frames.video)}[{frames.start}:{stop}]" + (f" ({frames.pick} spread)" if frames.pick else "")
    if not frames.files:
        return ""
    return (f"{rel(frames.files[0].parent)}/ ({len(frames.files)} files, {frames.files[0].name} … "
            f"{frames.files[-1].name})")


def write_manifest(path: Path, people, visits) -> None:
    """The visit set as CSV, and a line on how far it falls short of the benchmark's size (issue 21)."""
    import csv

    from ..evaluation.visitsets import part_of

    base = path.resolve().parent
    enrolled = {p.id: _where(p.enroll, base) for p in people}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["visit", "set", "person", "part", "frames", "fps", "seconds", "frames_from", "enrolled_from"])
        for v in visits:
            seconds = v.times[-1] - v.times[0] if len(v.times) > 1 else 0.0
            w.writerow([v.id, v.set, v.person, part_of(v.person), len(v.times), f"{v.fps:.2f}", f"{seconds:.2f}",
                        _where(v.frames, base), enrolled.get(v.person, "")])
    fast = [v for v in visits if v.fps >= 10]
    print(f"{len(visits)} visits of {len({v.person for v in visits})} people written to {path}; at 10 fps or more: "
          f"{len(fast)} visits of {len({v.person for v in fast})} people (the benchmark asks for 50 visits of 20)")


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _s(x) -> str:
    return "n/a" if x is None else f"{x:.2f} s"


def print_table(r: dict) -> None:
    print(f"door visits ({r['part']} part, sets {', '.join(r['sets'])}): {r['people_enrolled']} people enrolled"
          + (f", {len(r['people_not_enrolled'])} could not be" if r["people_not_enrolled"] else ""))
    print(f"  {'set':<14} {'fps':>5} {'people':>6} {'visits':>6} {'≤2 s':>6} {'≤5 s':>6} {'≤5 s,≤1 prompt':>14} "
          f"{'BPNRR':>6} {'BPCER':>6} {'FNIR':>6} {'p50':>7} {'p95':>7}")
    for key, s in [*r["by_set"].items(), ("all", r["all"])]:
        print(f"  {key:<14} {s['fps_median']:>5} {s['people']:>6} {s['visits']:>6} {_pct(s['accepted_2s']):>6} "
              f"{_pct(s['accepted_5s']):>6} {_pct(s['accepted_5s_one_prompt']):>14} {_pct(s['bpnrr']):>6} "
              f"{_pct(s['bpcer']):>6} {_pct(s['fnir']):>6} {_s(s['face_to_door_p50']):>7} {_s(s['face_to_door_p95']):>7}")
    a = r["all"]
    print(f"  first decisions: " + ", ".join(f"{k} {v}" for k, v in a["outcomes"].items())
          + f"; asked for head turns in {a['challenged']}; instructions: "
          + (", ".join(f"{k} {v}" for k, v in a["instructions"].items()) or "none"))
    print(f"  frames processed {a['processed_frames']}, dropped while busy {a['dropped_frames']}")
    if "plot" in r:
        print(f"plot: {r['plot']}")
