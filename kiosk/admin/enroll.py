"""``kiosk-admin enroll`` and ``enroll-dir``: residents from photos."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path


from ..errors import EnrollmentRefused
from ..capture.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..match.enroll import MAX_TEMPLATES, Enroller, select_diverse
from ..gallery.store import Resident, open_store
from ..extra import need, tqdm
from .common import config_of

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def register(sub) -> None:
    p = sub.add_parser(
        "enroll",
        help="enroll one resident from photos",
        description="Enroll (or add photos to) one resident. Photos with no face, several faces, or a face "
        "too small or too blurred are refused with the reason; the rest are enrolled. Photos are not kept.",
    )
    p.add_argument("--id", required=True, help="opaque resident id (letters, digits, . _ -)")
    p.add_argument("--name", required=True, help="display name (stored, never logged or published)")
    p.add_argument("photos", nargs="+", metavar="PHOTO",
                   help="photos (or short videos) of the resident alone; a few different ones recognise best")
    _common(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser(
        "enroll-dir",
        help="enroll every resident in a folder (one sub-folder per resident)",
        description="Enroll residents from DIR/<resident-id>/*.jpg; the folder name is the id and the name.",
    )
    p.add_argument("directory", metavar="DIR", help="folder with one sub-folder of photos per resident")
    _common(p)
    p.set_defaults(func=cmd_enroll_dir)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, help="override device.state_dir (where the database lives)")
    p.add_argument("--max-templates", type=int, default=MAX_TEMPLATES, metavar="K",
                   help=f"keep at most K templates per resident: the sharpest, then the most different "
                   f"(default {MAX_TEMPLATES}, what the kiosk's calibration assumes)")


def _check_id(rid: str) -> str:
    if not _ID.match(rid):
        raise SystemExit(f"kiosk-admin: resident id {rid!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return rid


def enroll_photos(store, enroller: Enroller, resident: Resident, photos: list[Path], out=None,
                  max_templates: int = MAX_TEMPLATES) -> tuple[int, int]:
    """Enroll what can be enrolled (the most diverse ``max_templates``); print one line per refusal.
    Returns (added, refused)."""
    templates, refused = [], 0
    for photo in photos:
        try:
            templates.extend(enroller.from_file(photo))
        except EnrollmentRefused as e:
            refused += 1
            print(f"refused: {e} [{e.reason}]", file=out or sys.stderr)
    kept = select_diverse(templates, max_templates)
    if len(kept) < len(templates):
        print(f"{resident.id}: kept {len(kept)} of {len(templates)} usable templates (the sharpest, then the most "
              f"different; --max-templates)", file=out or sys.stderr)
    added = store.enroll(resident, [(t.vector, t.source_sha256) for t in kept]) if kept else 0
    return added, refused


def cmd_enroll(args) -> int:
    cfg = config_of(args)
    store = open_store(cfg)
    enroller = Enroller(cfg.detect)
    if args.max_templates < 1:
        raise SystemExit("kiosk-admin: --max-templates must be at least 1")
    added, refused = enroll_photos(store, enroller, Resident(_check_id(args.id), args.name), [Path(p) for p in args.photos],
                                   max_templates=args.max_templates)
    print(f"{args.id}: {added} template(s) enrolled, {refused} photo(s) refused")
    return 0 if added or not refused else 1


def cmd_enroll_dir(args) -> int:
    need("enroll-dir", "tqdm")
    cfg = config_of(args)
    root = Path(args.directory)
    if not root.is_dir():
        raise SystemExit(f"kiosk-admin: {root}: not a folder")
    people = sorted(d for d in root.iterdir() if d.is_dir())
    if not people:
        raise SystemExit(f"kiosk-admin: {root}: no resident sub-folders")
    store = open_store(cfg)
    enroller = Enroller(cfg.detect)
    total_added = total_refused = residents = 0
    for d in tqdm(people, desc="enrolling", unit="resident", file=sys.stderr, disable=None):
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        added, refused = enroll_photos(store, enroller, Resident(_check_id(d.name), d.name), photos,
                                       max_templates=args.max_templates)
        total_added += added
        total_refused += refused
        residents += 1 if added else 0
    print(f"{residents} resident(s) enrolled with {total_added} template(s); {total_refused} photo(s) refused")
    return 0 if total_added else 1
