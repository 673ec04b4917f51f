"""``kiosk-admin evaluate-liveness``: APCER per attack type, BPCER and BPNRR on a clip set (a thin wrapper
around :mod:`kiosk.evaluation.liveness`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelUnavailable
from ..evaluation import liveness as ev
from ..evaluation.livesets import FORMATS, GENUINE, parse_subjects, read_set
from ..extra import need
from .common import config_of


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate-liveness",
        help="APCER per attack type, BPCER and BPNRR of the liveness check on a clip set",
        description="Play every clip of a set through face detection and the configured liveness check, one visit "
        "per clip at the times its frames were taken, and report ISO/IEC 30107-3 error rates: APCER per attack type "
        "(attacks accepted as live; also per medium and support where the set has them), BPCER (genuine clips "
        "refused as spoof) and BPNRR (genuine clips left at 'look at the camera'). Clips with no face found are "
        "failures to acquire, counted apart. Sets: a make-attacks folder (manifest), or the development parts of "
        "Idiap Replay-Attack and NUAA as shared/data/recipes extracts them (see docs/liveness.md).",
    )
    p.add_argument("directory", metavar="DIR", help="the set's folder")
    p.add_argument("--format", choices=FORMATS, default="manifest",
                   help="how DIR is laid out: manifest (make-attacks, the default), replay-attack (DIR/<split>/<clip>/) "
                   "or nuaa (DIR/{live,print}/<subject>/)")
    p.add_argument("--split", default="devel", help="Replay-Attack split folder (default devel; train is what the "
                   "appearance model was trained on)")
    p.add_argument("--subjects", metavar="LIST", help="only these subjects or clients, e.g. 0006-0008 (NUAA's "
                   "0001-0005 trained the appearance model)")
    p.add_argument("--window", type=float, metavar="S", help="cut clips longer than S seconds into visits of S seconds")
    p.add_argument("--every", type=int, default=1, metavar="N", help="keep every N-th frame (a lower frame rate)")
    p.add_argument("--ablation", action="store_true", help="also play each clip with every cue switched off in turn, "
                   "without the appearance cue, and with it alone")
    p.add_argument("--json", action="store_true", help="print the report as JSON (with per-clip scores)")
    p.add_argument("--save-json", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the scores and error rates as PNG")
    p.set_defaults(func=cmd_evaluate_liveness)


def cmd_evaluate_liveness(args) -> int:
    need("evaluate-liveness", "tqdm", *(["matplotlib"] if args.plot else []))
    cfg = config_of(args)
    root = Path(args.directory)
    if args.every < 1:
        raise SystemExit("kiosk-admin: --every must be 1 or more")
    try:
        clips = read_set(args.format, root, split=args.split, subjects=parse_subjects(args.subjects),
                         window_s=args.window)
        variants = ev.ABLATION if args.ablation else (frozenset(),)
        results = ev.evaluate(clips, cfg, variants=variants, every=args.every, progress=True)
    except (FileNotFoundError, ValueError, ModelUnavailable) as e:
        raise SystemExit(f"kiosk-admin: {e}") from None
    full = results[ev.FULL]
    rates = ev.error_rates(full)
    report = {"directory": str(root), "format": args.format, "split": args.split if args.format == "replay-attack" else None,
              "subjects": args.subjects, "window_s": args.window, "every": args.every,
              "fps": ev.median_fps(clips, args.every), **rates, "settings": cfg.liveness.model_dump()}
    if args.ablation:
        report["ablation"] = {name: _summary(ev.error_rates(rs)) for name, rs in results.items()}
    if args.plot:
        ev.plot(full, rates, args.plot, title=root.name, offset=cfg.liveness.appearance_offset)
        report["plot"] = str(args.plot)
    report["clips"] = ev.clip_rows(full)
    if args.save_json:
        args.save_json.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def _summary(rates: dict) -> dict:
    return {k: rates[k] for k in ("apcer", "apcer_by", "bpcer", "bpnrr", "genuine_not_accepted", "max_apcer")}


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def print_table(r: dict) -> None:
    where = r["directory"] + (f" ({r['split']})" if r.get("split") else "") + (f" subjects {r['subjects']}" if r.get("subjects") else "")
    print(f"{where}: liveness, ISO/IEC 30107-3 terms")
    print(f"  {'presentations':<14} {'fps':>5} {'clips':>5} {'live':>5} {'spoof':>5} {'look':>5} {'no face':>7}  rate")
    for key, c in r["counts"].items():
        rate = (f"BPCER {_pct(r['bpcer'])}, BPNRR {_pct(r['bpnrr'])}" if key == GENUINE
                else f"APCER {_pct(r['apcer'].get(key))}")
        print(f"  {key:<14} {r['fps'].get(key, 0):>5.2f} {c['clips']:>5} {c[ev.ACCEPTED]:>5} {c[ev.SPOOF]:>5} "
              f"{c[ev.LOOK]:>5} {c[ev.NO_FACE]:>7}  {rate}")
    for attr, vals in r["apcer_by"].items():
        print(f"  APCER by {attr}: " + ", ".join(f"{k} {_pct(v)}" for k, v in vals.items()))
    print(f"  worst APCER {_pct(r['max_apcer'])}, BPCER {_pct(r['bpcer'])}, "
          f"genuine not accepted (spoof or look-at-camera) {_pct(r['genuine_not_accepted'])}")
    print("  clips in which each cue spoke for live / against (at the verdict), and median frames with a face:")
    for key, c in r["cues"].items():
        print(f"    {key:<12} " + ", ".join(f"{cue} {c[cue]['live']}/{c[cue]['attack']}" for cue in ev.CUES)
              + f"; {c['median_frames']:g} frames, decided after {r['decided_after_s'][key]} s")
    if any(r.get("challenge", {}).values()):
        print("  asked for head turns (the active check), and how it ended:")
        for key, c in r["challenge"].items():
            print(f"    {key:<12} " + (", ".join(f"{k} {v}" for k, v in c.items()) or "none"))
    if "ablation" in r:
        kinds = list(r["apcer"])
        print("  ablation (the same frames, cues switched off):")
        print(f"    {'variant':<24} {'BPCER':>7} {'BPNRR':>7} " + " ".join(f"{'APCER ' + k:>14}" for k in kinds))
        for name, a in r["ablation"].items():
            print(f"    {name:<24} {_pct(a['bpcer']):>7} {_pct(a['bpnrr']):>7} "
                  + " ".join(f"{_pct(a['apcer'].get(k)):>14}" for k in kinds))
    if "plot" in r:
        print(f"plot: {r['plot']}")
