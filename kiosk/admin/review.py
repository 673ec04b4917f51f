"""``kiosk-admin gallery review``: the doors' proposals, listed, approved or rejected; ``gallery door-templates``.

The proposals wait in the back end's store, sealed to the admin's key; only
here, with the admin's private key, are they opened and checked (the door's
signature, the admin's own invitation inside, for this resident and site).
Approval writes the descriptors into the admin's enrollment database as the
resident's templates and publishes the usual signed gallery update; nothing
else ever brings a proposal to a door.

Two kinds: an **enrollment** at the door (approved by hand only), and a
**door template** from a visit the door was sure of twice over
(:mod:`kiosk.enrollment.door_templates`), approved by hand or by policy (``--auto``):
:class:`kiosk.gallery.adapt.AdaptPolicy` (within ``--anchor`` of an enrolled
template, not a near copy of one held, at most ``--max-door-templates`` per
resident, oldest replaced first). A door template the policy refuses is
rejected with its reason. ``gallery door-templates`` lists them and revokes
one (then publishes): the next update takes it off every door.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..backend.proposals import PENDING, REJECTED, decide, proposals
from ..backend.store import open_store as open_backend_store
from .. import review
from ..enrollment.proposal import DOOR_TEMPLATE
from ..gallery.adapt import AdaptPolicy
from ..gallery.store import open_store
from ..sync import keys as keymod
from .common import config_of


def register(gs) -> None:
    from .gallery import _keys_args

    p = gs.add_parser(
        "review", help="list the doors' proposals (enrollment, door templates); approve (and publish) or reject",
        description="The doors' proposals, waiting in the back end's store (--store), sealed to the admin's key: "
        "enrollments at the door (filed under their invitation) and door templates from visits a door was sure of "
        "(filed under the visit's event id). Without --approve, --reject or --auto: list the pending ones, each "
        "opened with the admin's private key and checked (signed by a door of the site; an enrollment with the "
        "admin's own invitation inside). --approve ID adds the proposal's descriptors to the admin's enrollment "
        "database (a door template only as the policy admits it) and publishes the gallery update as `gallery "
        "publish` does (--no-publish: later); --reject ID drops it; --auto decides every pending door template "
        "by the policy (enrollments wait for a person). A proposal nobody approved never reaches a door. See "
        "docs/enrollment.md.")
    _keys_args(p)
    p.add_argument("--key", type=Path, required=True, metavar="ADMIN_KEY", help="the admin's private key file (0600)")
    p.add_argument("--store", required=True, metavar="URL",
                   help="the back end's store: sqlite:///PATH or postgresql://USER@HOST/DB")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--approve", metavar="ID", help="approve the proposal filed under this id (an enrollment's "
                      "invitation, a door template's visit)")
    what.add_argument("--reject", metavar="ID", help="reject the proposal filed under this id")
    what.add_argument("--auto", action="store_true",
                      help="approve the pending door templates the policy admits, reject the others (with why)")
    _policy_args(p)
    p.add_argument("--name", help="the resident's display name, when neither the invitation nor the database has one")
    p.add_argument("--no-publish", action="store_true", help="approve without publishing (run `gallery publish` later)")
    p.add_argument("--valid-hours", type=float, default=168.0, help="hours the update may be applied (default 168)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the devices' acks (default 30)")
    p.set_defaults(func=cmd_review)

    d = gs.add_parser(
        "door-templates", help="list the residents' door templates; revoke one (and publish)",
        description="The door templates in the admin's enrollment database: whose, the visit each came from, "
        "when it was added. --revoke VISIT takes one off and publishes the gallery update as `gallery publish` "
        "does (--no-publish: later): the doors then judge the resident without it. See docs/enrollment.md.")
    _keys_args(d, devices_required=False)
    d.add_argument("--key", type=Path, metavar="ADMIN_KEY", help="the admin's private key file (0600; to publish)")
    d.add_argument("--resident", metavar="ID", help="only this resident's")
    d.add_argument("--revoke", metavar="VISIT", help="take off the door template from this visit")
    d.add_argument("--no-publish", action="store_true", help="revoke without publishing (run `gallery publish` later)")
    d.add_argument("--valid-hours", type=float, default=168.0, help="hours the update may be applied (default 168)")
    d.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the devices' acks (default 30)")
    d.set_defaults(func=cmd_door_templates)


def _policy_args(p) -> None:
    p.add_argument("--anchor", type=float, metavar="D",
                   help="a door template must be within D of an enrolled template (default: the calibrated "
                   "threshold at the gallery's size)")
    p.add_argument("--max-door-templates", type=int, default=AdaptPolicy.max_door_templates, metavar="M",
                   help="door templates kept per resident, the oldest replaced first (default %(default)s)")
    p.add_argument("--novelty", type=float, default=AdaptPolicy.novelty, metavar="D",
                   help="a door template nearer than D to one held adds nothing (default %(default)s)")


def _policy(cfg, args, store) -> AdaptPolicy:
    return review.policy_for(cfg.match, store, anchor=args.anchor, max_door_templates=args.max_door_templates,
                             novelty=args.novelty)


def _publish(args) -> int:
    from .gallery import cmd_publish

    args.snapshot, args.dry_run, args.max_message_bytes = False, False, None
    return cmd_publish(args)


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
            if row is None:
                return 1
            if not decide(backend, row["invitation"], REJECTED):
                print(f"kiosk-admin gallery review: {review.AlreadyDecided(row['invitation'])}", file=sys.stderr)
                return 1
            print(f"proposal {row['invitation']}: rejected")
            return 0
        entries = [review.read(r, admin, ring, backend) for r in rows]
        if args.auto:
            approved = _auto(cfg, args, entries, backend)
            if not approved or args.no_publish:
                return 0
            return _publish(args)
        if not args.approve:
            _list(entries)
            return 0
        row = _one(rows, args.approve)
        if row is None:
            return 1
        [entry] = [e for e in entries if e.row is row]
        status = (_door_template if entry.kind == DOOR_TEMPLATE else _enrollment)(cfg, args, entry, backend)
    finally:
        backend.close()
    if status:
        return status
    if args.no_publish:
        print("run `kiosk-admin gallery publish` to send it to the devices")
        return 0
    return _publish(args)


def _enrollment(cfg, args, entry: review.Pending, backend) -> int:
    if entry.problem is not None:
        if entry.reject:  # its sealed descriptors go now: nothing of an erased resident waits in the store
            review.reject(backend, entry, note=entry.reason)
        print(f"kiosk-admin gallery review: proposal {entry.key} cannot be approved: {entry.problem}; "
              + ("rejected" if entry.reject else "(--reject it)"), file=sys.stderr)
        return 1
    store = open_store(cfg)
    try:
        problem = review.enroll(store, backend, entry, args.name)
    except review.AlreadyDecided as e:
        print(f"kiosk-admin gallery review: {e}", file=sys.stderr)
        return 1
    finally:
        store.db.close()
    if problem:
        print(f"kiosk-admin gallery review: {problem}: give --name", file=sys.stderr)
        return 2
    print(f"proposal {entry.key}: approved, {len(entry.proposal.templates)} template(s) added to the resident")
    return 0


def _door_template(cfg, args, entry: review.Pending, backend) -> int:
    """Approve one door template by the policy (0), or say why not and reject it (1)."""
    store = open_store(cfg)
    try:
        verdict = review.admit(store, _policy(cfg, args, store), backend, entry)
    except review.AlreadyDecided as e:
        print(f"kiosk-admin gallery review: {e}", file=sys.stderr)
        return 1
    finally:
        store.db.close()
    if verdict is None:
        print(f"door template {entry.key}: approved")
        return 0
    print(f"kiosk-admin gallery review: door template {entry.key}: rejected: {verdict}", file=sys.stderr)
    return 1


def _auto(cfg, args, entries: list[review.Pending], backend) -> int:
    """Decide every pending door template by the policy; how many were approved."""
    if not any(e.kind == DOOR_TEMPLATE for e in entries):
        print("no pending door templates")
        return 0
    store = open_store(cfg)
    try:
        decided = review.auto(store, _policy(cfg, args, store), backend, entries)
    finally:
        store.db.close()
    for e, verdict in decided:
        print(f"door template {e.key}: " + ("approved" if verdict is None else f"rejected: {verdict}"))
    approved = sum(v is None for _, v in decided)
    print(f"{approved} of {len(decided)} door template(s) approved")
    if approved and args.no_publish:
        print("run `kiosk-admin gallery publish` to send them to the devices")
    return approved


def _one(rows: list[dict], wanted: str) -> dict | None:
    """The pending proposal filed under ``wanted`` (its invitation id, or a unique start of it of 6 or more)."""
    hits = [r for r in rows if r["invitation"] == wanted] or (
        [r for r in rows if r["invitation"].startswith(wanted)] if len(wanted) >= 6 else [])
    if len(hits) != 1:
        print(f"kiosk-admin gallery review: {'no' if not hits else 'more than one'} pending proposal {wanted!r}",
              file=sys.stderr)
        return None
    return hits[0]


def _list(entries: list[review.Pending]) -> None:
    if not entries:
        print("no pending proposals")
        return
    print(f"{'invitation or visit':<24} {'door':<20} {'resident':<20} {'templates':>9}  received  kind")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.row["received_at"]))
        rid = e.resident_id if e.problem is None else "?"
        n = len(e.proposal.templates) if e.proposal is not None else "?"
        line = f"{e.key:<24} {e.door:<20} {rid:<20} {n:>9}  {when}  {e.detail}"
        print(line if e.problem is None else f"{line}  NOT VALID: {e.reason}")


def cmd_door_templates(args) -> int:
    cfg = config_of(args)
    if args.revoke and not args.no_publish and (args.key is None or not args.devices):
        print("kiosk-admin gallery door-templates: --key ADMIN_KEY and --devices to publish (or --no-publish)",
              file=sys.stderr)
        return 2
    store = open_store(cfg)
    try:
        if args.revoke:
            rid = store.revoke_door_template(args.revoke)
            if rid is None:
                print(f"kiosk-admin gallery door-templates: no door template from visit {args.revoke!r}",
                      file=sys.stderr)
                return 1
            print(f"door template {args.revoke}: revoked (resident {rid})")
        else:
            rows = store.door_templates(args.resident)
            if not rows:
                print("no door templates")
            else:
                print(f"{'resident':<20} {'visit':<38} added")
                for rid, visit, added in rows:
                    print(f"{rid:<20} {visit:<38} {time.strftime('%Y-%m-%d %H:%M', time.localtime(added))}")
            return 0
    finally:
        store.db.close()
    if args.no_publish:
        print("run `kiosk-admin gallery publish` to send it to the devices")
        return 0
    return _publish(args)
