"""``scripts/bench``: argument parsing and the run, video by video."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import cv2

from kiosk.config import load_config

from . import enrollment, videos
from .baseline import run_baseline
from .ours import run_ours
from .report import VideoRow, as_json, table, verdicts
from .search import bench_search, bench_site_search
from .stack import use_baseline_stack


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run this pipeline and face_recognition's per-frame loop (face_locations + face_encodings on "
        "every frame, compare_faces at 0.6) on the same decoded frames of the shared videos; print CPU ms per frame, "
        "descriptors, faces and identities for each, the gallery search at 100,000 templates, and the kiosk's own "
        "search at 10,000 residents x 5 templates. Exits 1 if a target is missed: >= 8x less CPU per frame, every "
        "identity the loop recognises also recognised, search >= 5x faster than face_distance, the site search "
        "within 5 ms. Test data: $KIOSK_TEST_DATA or ../shared/data.",
    )
    p.add_argument("--quick", action="store_true", help="four short videos instead of all eleven")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--config", metavar="FILE", help="kiosk config for our pipeline (default: built-in defaults)")
    p.add_argument("--video", action="append", metavar="LABEL", help="only this video (repeatable)")
    p.add_argument("--no-search", action="store_true", help="skip the search timings (100,000 templates; 10,000 residents)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    use_baseline_stack()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cv2.setNumThreads(1)
    config = load_config(args.config)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    items = enrollment.sources(videos.data_dir())
    gallery, ours_enrolled = enrollment.enroll_ours(config, items)
    known, labels, base_enrolled = enrollment.enroll_baseline(items)
    say(f"enrolled {len(items)} photos/videos: ours {gallery.template_count} templates of {len(gallery)} residents, "
        f"loop {len(labels)} encodings of {len(set(labels))} people")
    for who, rep in (("ours", ours_enrolled), ("loop", base_enrolled)):
        for line in rep.refused:
            say(f"  {who} refused {line}")

    chosen = videos.selected(args.quick)
    if args.video:
        chosen = [(label, path) for label, path in chosen if label in args.video]
    rows = []
    for label, path in chosen:
        video = videos.decode(label, path)
        ours = run_ours(video.frames, config, gallery)
        base = run_baseline(video.frames, known, labels)
        rows.append(VideoRow(label, video.size, ours, base))
        say(f"{label}: {len(video.frames)} frames, ours {ours.cpu_ms_per_frame:.1f} ms/frame, "
            f"loop {base.cpu_ms_per_frame:.1f} ms/frame")

    search = None if args.no_search else bench_search()
    site = None if args.no_search else bench_site_search()
    enrolled = {"ours": ours_enrolled.templates, "loop": base_enrolled.templates,
                "ours_refused": ours_enrolled.refused, "loop_refused": base_enrolled.refused}
    if args.json:
        print(json.dumps(as_json(rows, search, enrolled, site), indent=2))
    else:
        print()
        print(table(rows, search, site))
    return 0 if all(ok for _, ok, _ in verdicts(rows, search, site)) else 1
