"""``kiosk bench``: measure this device, print the costs, the time to the door and the settings to use."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import KioskConfig, config_from_args
from .measure import Costs, device_gallery, measure, smallest_face_px, synthetic_gallery
from .plan import Plan, Visit, recommend


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure this device's cost per stage and recommend capture.fps, detect.far_scale and the motion gate",
        description="Time each stage on this device (capture, motion gate, detection at each scale, a descriptor, "
        "liveness, a gallery search, the outbox commit) with the configured camera (or --source), the real models "
        "and the real gallery; print the time from a face appearing to the door decision and the settings that "
        "suit this device. Reads only: nothing is written into the state folder and the door is not opened.",
    )
    p.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    p.add_argument("--source", metavar="SPEC", help="override capture.source (e.g. a clip: --source FILE)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="override device.state_dir")
    p.add_argument("--frames", type=_frames, default=45, metavar="N", help="frames to measure on (default 45, at least 2)")
    p.add_argument("--gallery-size", type=int, metavar="N",
                   help="search a synthetic gallery of N residents (3 templates each) instead of this device's")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time stages by the wall clock (default: what a resident waits) or by this thread's CPU "
                   "time (steadier on a machine busy with other work)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)


def _frames(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError("at least 2")
    return n


def _with_provisioning(cfg: KioskConfig) -> KioskConfig:
    """What the daemon runs on: the stored provisioning applied (read only)."""
    from ..errors import KioskError
    from ..provisioning.startup import provisioned_config

    try:
        return provisioned_config(cfg)[0]
    except KioskError as e:
        print(f"kiosk bench: provisioning: {e}", file=sys.stderr)
        return cfg


def cmd_bench(args) -> int:
    cfg = config_from_args(args)
    cfg = _with_provisioning(cfg).with_overrides(source=args.source)
    if args.gallery_size is not None:
        gallery, kind = synthetic_gallery(max(0, args.gallery_size)), "synthetic, --gallery-size"
    else:
        gallery, kind, residents, templates = device_gallery(cfg)
        if gallery is None:
            gallery = synthetic_gallery(residents, templates)
            kind = ("synthetic, the database's size: its template key is not readable here" if kind == "unreadable"
                    else "nobody enrolled yet: --gallery-size N plans for N residents")

    def say(text: str) -> None:
        print(f"kiosk bench: {text}", file=sys.stderr, flush=True)

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    costs = measure(cfg, frames=args.frames, gallery=gallery, gallery_kind=kind, clock=clock, say=say)
    if args.clock == "cpu":
        costs.notes.append("stages timed by CPU time (--clock cpu): waiting for a busy CPU, or for the disk "
                           "(the commit's flush), is not counted")
    say("modelling visits")
    plan = recommend(cfg, costs)
    if args.json:
        json.dump({"costs": costs.as_json(), "plan": plan.as_json()}, sys.stdout, indent=2)
        print()
    else:
        print(format_report(cfg, costs, plan))
    return 0


# -- the report ----------------------------------------------------------------------


def _ms(t) -> str:
    return f"{t.median_ms:8.2f} {t.p90_ms:8.2f} {t.calls:5d}"


def format_report(cfg: KioskConfig, costs: Costs, plan: Plan) -> str:
    d, m, tr = cfg.detect, cfg.match, cfg.track
    w, h = costs.frame_size
    kind = "a camera" if costs.live else "a file"
    lines = [
        f"kiosk bench: {w}x{h} frames from {costs.source} ({kind}), {costs.frames} frames; gallery "
        f"{costs.gallery_residents} residents, {costs.gallery_templates} templates ({costs.gallery_kind})",
        "",
        f"{'STAGE':<30} {'MEDIAN':>8} {'P90':>8} {'RUNS':>5}  (ms)  WHEN IT RUNS",
        f"{'capture, wall':<30} {_ms(costs.capture)}  every frame: {costs.delivered_fps:g} frames/s delivered",
        f"{'capture, CPU':<30} {_ms(costs.capture_cpu)}  every frame",
        f"{'grey copy':<30} {_ms(costs.grey)}  every frame",
        f"{'motion gate':<30} {_ms(costs.motion)}  every frame",
        f"{f'detect near (scale {d.scale:g})':<30} {_ms(costs.near)}  every frame the gate is open",
    ]
    for scale, t in costs.far.items():
        lines.append(f"{f'detect far (scale {scale:g})':<30} {_ms(t)}  near pass finds nobody: every "
                     f"{_nth(d.far_every)} frame, each while it finds a face (faces from {smallest_face_px(d, scale)} px)")
    lines.append(f"{'descriptor':<30} {_ms(costs.descriptor)}  every {_nth(tr.embed_every)} good frame of an undecided "
                 f"visit, {m.max_votes} at most")
    if costs.liveness is not None:
        lines.append(f"{'liveness':<30} {_ms(costs.liveness)}  every frame of an undecided visit")
    lines.append(f"{f'gallery search ({costs.gallery_residents} res.)':<30} {_ms(costs.search)}  per descriptor "
                 f"(twice from the {_nth(m.votes_m)} on)")
    if costs.qr is not None:
        lines.append(f"{'QR look':<30} {_ms(costs.qr)}  every {_nth(cfg.qr_credential.every_n_frames)} frame the gate "
                     "is open")
    lines.append(f"{'outbox commit':<30} {_ms(costs.commit)}  once per decision, before the door opens")
    lines += ["", f"{'FROM FACE TO DOOR':<30} {'CONFIGURED':<44} RECOMMENDED",
              f"{'':<30} {f'{cfg.capture.fps:g} fps, far_scale {d.far_scale:g}':<44} "
              f"{plan.fps:g} fps, far_scale {plan.far_scale:g}"]
    for key, label in (("near", "resident at the door"), ("far", "resident a few metres away"),
                       ("unsure", "liveness unsure")):
        a, b = plan.configured.get(key), plan.recommended.get(key)
        if a is None and b is None:
            continue
        lines.append(f"{label:<30} {_visit(a):<44} {_visit(b)}")
    near = plan.recommended["near"]
    lines.append(f"  (recommended: {_why(cfg, near)})")
    lines += ["", "RECOMMENDED SETTINGS (paste into the config):"]
    for table, values in plan.settings().items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    lines += ["", "why:"] + [f"  {k}: {v}" for k, v in plan.reasons.items()]
    notes = costs.notes + [f"WARNING: {w}" for w in plan.warnings]
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _visit(v: Visit | None) -> str:
    if v is None:
        return "-"
    if v.seconds is None:
        return "not decided"
    if v.liveness == "unsure":
        asked = f"asked at {v.prompt_s:.2f} s, " if v.prompt_s is not None else ""
        return f"{asked}{v.outcome} at {v.seconds:.2f} s"
    return f"{v.seconds:.2f} s ({v.frames} frames, {v.period_ms:.0f} ms each)"


def _why(cfg: KioskConfig, v: Visit) -> str:
    votes = ", ".join(str(f) for f in v.descriptor_frames)
    text = (f"descriptors on frames {votes} of the visit (match.votes_k = {cfg.match.votes_k} agreeing votes, "
            f"track.embed_every = {cfg.track.embed_every})")
    if v.liveness != "off":
        text += f"; liveness decides from frame {cfg.liveness.min_frames} (liveness.min_frames)"
    return text + f"; decided on frame {v.frames}"


def _nth(n: int) -> str:
    if n == 1:
        return "1st"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{float(v):.2f}".rstrip("0").rstrip(".") if isinstance(v, float) and v != int(v) else f"{float(v):.1f}"
