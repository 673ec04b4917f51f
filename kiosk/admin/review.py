"""``kiosk-admin gallery review``: the doors' proposals (enrollment at the door), listed, approved or rejected.

The proposals wait in the back end's store, sealed to the admin's key; only
here, with the admin's private key, are they opened and checked (the door's
signature, the admin's own invitation inside, for this resident and site).
Approval writes the descriptors into the admin's enrollment database as the
resident's templates and publishes the usual signed gallery update; nothing
else ever brings a proposal to a door.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from ..backend.proposals import APPROVED, PENDING, REJECTED, decide, erased_since, filed_for, proposals
from ..backend.store import open_store as open_backend_store
from ..enrollment.proposal import open_proposal
from ..errors import EnvelopeError
from ..gallery.store import Resident, open_store
from ..match.models import MODEL_ID
from ..sync import keys as keymod
from .common import config_of


def register(gs) -> None:
    from .gallery import _keys_args

    p = gs.add_parser(
        "review", help="list the doors' enrollment proposals; approve (and publish) or reject one",
        description="The doors' proposals from enrollment at the door, waiting in the back end's store (--store), "
        "sealed to the admin's key. Without --approve or --reject: list the pending ones, each opened with the "
        "admin's private key and checked (signed by a door of the site, the admin's own invitation inside). "
        "--approve INVITATION adds the proposal's descriptors to the admin's enrollment database as the "
        "resident's templates and publishes the gallery update as `gallery publish` does (--no-publish: later); "
        "--reject INVITATION drops it. A proposal nobody approved never reaches a door. See docs/enrollment.md.")
    _keys_args(p)
    p.add_argument("--key", type=Path, required=True, metavar="ADMIN_KEY", help="the admin's private key file (0600)")
    p.add_argument("--store", required=True, metavar="URL",
                   help="the back end's store: sqlite:///PATH or postgresql://USER@HOST/DB")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--approve", metavar="INVITATION", help="approve the proposal filed under this invitation")
    what.add_argument("--reject", metavar="INVITATION", help="reject the proposal filed under this invitation")
    p.add_argument("--name", help="the resident's display name, when neither the invitation nor the database has one")
    p.add_argument("--no-publish", action="store_true", help="approve without publishing (run `gallery publish` later)")
    p.add_argument("--valid-hours", type=float, default=168.0, help="hours the update may be applied (default 168)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the devices' acks (default 30)")
    p.set_defaults(func=cmd_review)


def cmd_review(args) -> int:
    from .gallery import _devices

    cfg = config_of(args)
    site = args.site or cfg.device.site
    admin = keymod.load_private(args.key)
    if admin.owner != "admin":
        print(f"kiosk-admin gallery review: {args.key}: keys of {admin.owner!r}, not the admin's", file=sys.stderr)
        return 2
    devices = _devices(args.devices, site)
    ring = keymod.KeyRing(devices.values())
    backend = open_backend_store(args.store)
    try:
        rows = [r for r in proposals(backend, status=PENDING) if r["site"] == site]
        if args.reject:
            row = _one(rows, args.reject)
            if row is None or not decide(backend, row["invitation"], REJECTED):
                return 1
            print(f"proposal {row['invitation']}: rejected")
            return 0
        if not args.approve:
            _list(rows, admin, ring, backend)
            return 0
        row = _one(rows, args.approve)
        if row is None:
            return 1
        try:
            proposal = open_proposal(row["proposal"], admin, ring, invitation_id=row["invitation"])
        except EnvelopeError as e:
            print(f"kiosk-admin gallery review: proposal {row['invitation']} cannot be approved: {e} "
                  "(--reject it)", file=sys.stderr)
            return 1
        claims = proposal.claims
        gone = _erased(backend, row, proposal)
        if gone:
            # Its sealed descriptors go now: nothing of an erased resident waits in the store.
            decide(backend, row["invitation"], REJECTED, note=gone[0])
            print(f"kiosk-admin gallery review: proposal {row['invitation']} cannot be approved: {gone[1]}; "
                  "rejected", file=sys.stderr)
            return 1
        if (claims["site"], claims["device"]) != (row["site"], row["device"]) or claims["model_id"] != MODEL_ID:
            print(f"kiosk-admin gallery review: proposal {row['invitation']} cannot be approved: it names another "
                  "door than the one that sent it, or descriptors of another model (--reject it)", file=sys.stderr)
            return 1
        status = _enroll(cfg, proposal, args.name)
        if status:
            return status
        decide(backend, row["invitation"], APPROVED)
    finally:
        backend.close()
    print(f"proposal {row['invitation']}: approved, {len(proposal.templates)} template(s) added to the resident")
    if args.no_publish:
        print("run `kiosk-admin gallery publish` to send it to the devices")
        return 0
    from .gallery import cmd_publish

    args.snapshot, args.dry_run, args.max_message_bytes = False, False, None
    return cmd_publish(args)


def _one(rows: list[dict], wanted: str) -> dict | None:
    """The pending proposal filed under ``wanted`` (its invitation id, or a unique start of it of 6 or more)."""
    hits = [r for r in rows if r["invitation"] == wanted] or (
        [r for r in rows if r["invitation"].startswith(wanted)] if len(wanted) >= 6 else [])
    if len(hits) != 1:
        print(f"kiosk-admin gallery review: {'no' if not hits else 'more than one'} pending proposal {wanted!r}",
              file=sys.stderr)
        return None
    return hits[0]


def _erased(backend, row: dict, proposal) -> tuple[str, str] | None:
    """Why a proposal opened and checked must not enroll its resident, as (reason, message), or None."""
    if not filed_for(backend, row, proposal.resident_id):
        return "wrong_resident", "filed under another resident (erasing this one would not reach it)"
    if erased_since(backend, proposal.resident_id, proposal.invitation.issued_at):
        return "erased", "the resident was erased after the invitation was issued"
    return None


def _list(rows: list[dict], admin, ring, backend) -> None:
    if not rows:
        print("no pending proposals")
        return
    print(f"{'invitation':<24} {'door':<20} {'resident':<20} {'templates':>9}  received")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["received_at"]))
        try:
            p = open_proposal(r["proposal"], admin, ring, invitation_id=r["invitation"])
        except EnvelopeError as e:
            print(f"{r['invitation']:<24} {r['site'] + '/' + r['device']:<20} {'?':<20} {'?':>9}  {when}  "
                  f"NOT VALID: {getattr(e, 'reason', e)}")
            continue
        gone = _erased(backend, r, p)
        if gone:
            print(f"{r['invitation']:<24} {r['site'] + '/' + r['device']:<20} {'?':<20} {len(p.templates):>9}  "
                  f"{when}  NOT VALID: {gone[0]}")
            continue
        print(f"{r['invitation']:<24} {r['site'] + '/' + r['device']:<20} {p.resident_id:<20} "
              f"{len(p.templates):>9}  {when}")


def _enroll(cfg, proposal, name: str | None) -> int:
    """The proposal's descriptors as the resident's templates in the admin's enrollment database."""
    store = open_store(cfg)
    try:
        rid = proposal.resident_id
        current = store.residents().get(rid)
        name = name or proposal.claims.get("name") or (current.name if current else None)
        if not name:
            print(f"kiosk-admin gallery review: resident {rid!r} has no display name yet: give --name",
                  file=sys.stderr)
            return 2
        resident = Resident(rid, name, current.valid_from if current else None,
                            current.valid_until if current else None)
        store.enroll(resident, [(v, "proposal:" + hashlib.sha256(v.astype("<f4").tobytes()).hexdigest())
                                for v in proposal.templates])
    finally:
        store.db.close()
    return 0
