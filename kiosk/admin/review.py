"""``kiosk-admin gallery review``: the doors' proposals, listed, approved or rejected; ``gallery door-templates``.

The proposals wait in the back end's store, sealed to the admin's key; only
here, with the admin's private key, are they opened and checked (the door's
signature, the admin's own invitation inside, for this resident and site).
Approval writes the descriptors into the admin's enrollment database as the
resident's templates and publishes the usual signed gallery update; nothing
else ever brings a proposal to a door.

Two kinds: an **enrollment** at the door (approved by hand only), and a
**door template** from a visit the door was sure of twice over
(:mod:`kiosk.gallery.propose`), approved by hand or by policy (``--auto``):
:class:`kiosk.gallery.adapt.AdaptPolicy` (within ``--anchor`` of an enrolled
template, not a near copy of one held, at most ``--max-door-templates`` per
resident, oldest replaced first). A door template the policy refuses is
rejected with its reason. ``gallery door-templates`` lists them and revokes
one (then publishes): the next update takes it off every door.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from ..backend.proposals import APPROVED, PENDING, REJECTED, decide, erased_since, filed_for, proposals
from ..backend.store import open_store as open_backend_store
from ..enrollment.proposal import DOOR_TEMPLATE, open_proposal
from ..errors import EnvelopeError
from ..gallery.adapt import AdaptPolicy
from ..gallery.store import Resident, open_store
from ..match.models import MODEL_ID
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
    what.add_argument("--approve", metavar="INVITATION", help="approve the proposal filed under this invitation")
    what.add_argument("--reject", metavar="INVITATION", help="reject the proposal filed under this invitation")
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
    p.add_argument("--max-door-templates", type=int, default=3, metavar="M",
                   help="door templates kept per resident, the oldest replaced first (default 3)")
    p.add_argument("--novelty", type=float, default=0.04, metavar="D",
                   help="a door template nearer than D to one held adds nothing (default 0.04)")


def _policy(cfg, args, store) -> AdaptPolicy:
    from ..match.calibration import operating_point

    anchor = args.anchor
    if anchor is None:
        anchor = operating_point(cfg.match, max(1, len(store.residents()))).threshold
    return AdaptPolicy(anchor, args.max_door_templates, args.novelty)


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
            if row is None or not decide(backend, row["invitation"], REJECTED):
                return 1
            print(f"proposal {row['invitation']}: rejected")
            return 0
        if args.auto:
            approved = _auto(cfg, args, [r for r in rows if r["kind"] == DOOR_TEMPLATE], admin, ring, backend)
            if not approved or args.no_publish:
                return 0
            return _publish(args)
        if not args.approve:
            _list(rows, admin, ring, backend)
            return 0
        row = _one(rows, args.approve)
        if row is None:
            return 1
        if row["kind"] == DOOR_TEMPLATE:
            status = _door_template(cfg, args, row, admin, ring, backend)
            if status or args.no_publish:
                return status
            return _publish(args)
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
    return _publish(args)


def _door_template(cfg, args, row: dict, admin, ring, backend) -> int:
    """Approve one door template by the policy (0), or say why not and reject it (1)."""
    store = open_store(cfg)
    try:
        verdict = _admit(store, _policy(cfg, args, store), row, admin, ring, backend)
    finally:
        store.db.close()
    if verdict is None:
        decide(backend, row["invitation"], APPROVED)
        print(f"door template {row['invitation']}: approved")
        return 0
    decide(backend, row["invitation"], REJECTED, note=verdict)
    print(f"kiosk-admin gallery review: door template {row['invitation']}: rejected: {verdict}", file=sys.stderr)
    return 1


def _auto(cfg, args, rows: list[dict], admin, ring, backend) -> int:
    """Decide every pending door template by the policy; how many were approved."""
    if not rows:
        print("no pending door templates")
        return 0
    store = open_store(cfg)
    approved = 0
    try:
        policy = _policy(cfg, args, store)
        for row in rows:
            verdict = _admit(store, policy, row, admin, ring, backend)
            decide(backend, row["invitation"], APPROVED if verdict is None else REJECTED, note=verdict)
            approved += verdict is None
            print(f"door template {row['invitation']}: " + ("approved" if verdict is None else f"rejected: {verdict}"))
    finally:
        store.db.close()
    print(f"{approved} of {len(rows)} door template(s) approved")
    if approved and args.no_publish:
        print("run `kiosk-admin gallery publish` to send them to the devices")
    return approved


def _admit(store, policy: AdaptPolicy, row: dict, admin, ring, backend) -> str | None:
    """None if the door template is admitted (and stored); else why not (a reason word, then a few words)."""
    try:
        proposal = open_proposal(row["proposal"], admin, ring, invitation_id=row["invitation"])
    except EnvelopeError as e:
        return f"not_valid ({getattr(e, 'reason', 'refused')})"
    claims = proposal.claims
    if (claims["site"], claims["device"]) != (row["site"], row["device"]) or claims["model_id"] != MODEL_ID:
        return "not_valid (another door than the one that sent it, or another model's descriptors)"
    rid = proposal.resident_id
    if not filed_for(backend, row, rid):
        return "wrong_resident (filed under another resident)"
    if rid not in store.residents() or erased_since(backend, rid, claims["time"]):
        return "unknown_resident (not enrolled here, or erased since)"
    got = None
    for vector in proposal.templates:
        got = store.admit_door_template(rid, vector, proposal.key, policy)
        if got.admitted:
            return None
    return f"{got.reason} (anchor distance {got.anchor_distance:.3f}, limit {policy.anchor:.3f})"


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
    print(f"{'invitation or visit':<24} {'door':<20} {'resident':<20} {'templates':>9}  received  kind")
    for r in rows:
        if r["kind"] == DOOR_TEMPLATE:
            _list_door_template(r, admin, ring, backend)
            continue
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
              f"{len(p.templates):>9}  {when}  enrollment")


def _list_door_template(r: dict, admin, ring, backend) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["received_at"]))
    try:
        p = open_proposal(r["proposal"], admin, ring, invitation_id=r["invitation"])
    except EnvelopeError as e:
        print(f"{r['invitation']:<24} {r['site'] + '/' + r['device']:<20} {'?':<20} {'?':>9}  {when}  door template"
              f"  NOT VALID: {getattr(e, 'reason', e)}")
        return
    print(f"{r['invitation']:<24} {r['site'] + '/' + r['device']:<20} {p.resident_id:<20} {len(p.templates):>9}  "
          f"{when}  door template ({p.claims['method']}, distance {p.claims['distance']:.3f})")


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
