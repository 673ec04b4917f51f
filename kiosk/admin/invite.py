"""``kiosk-admin invite``: an enrollment invitation, a short-lived QR code for one resident at any door of a site."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..enrollment.invitation import ADMIN, DEFAULT_LIFETIME_S, issue_invitation
from ..sync import keys as keymod
from .provision import write_qr


def register(sub) -> None:
    p = sub.add_parser(
        "invite",
        help="issue an enrollment invitation: a resident enrolls at any door of the site with it, once",
        description="Issue an enrollment invitation: a compact JWS signed with the admin's private key, naming the "
        "resident (and optionally the display name), the site, an expiry (15 minutes by default) and a random "
        "nonce. Prints it; --out also writes it as a QR code PNG for the resident's phone or paper. At a door of "
        "the site the resident shows it to the camera; the door takes a few descriptors of the face and sends "
        "them, encrypted to the admin's key, as a proposal that `kiosk-admin gallery review` approves. Each "
        "invitation enrolls once; it is never a check-in credential. See docs/enrollment.md.",
    )
    p.add_argument("--key", type=Path, required=True, metavar="ADMIN_KEY", help="the admin's private key file (0600)")
    p.add_argument("--resident", required=True, metavar="ID", help="the resident's opaque id")
    p.add_argument("--name", help="the display name the door screen may show (optional)")
    p.add_argument("--site", required=True, help="the site whose doors take it")
    p.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME_S,
                   help=f"seconds until it expires (default {DEFAULT_LIFETIME_S:g})")
    p.add_argument("--out", type=Path, metavar="PNG", help="also write it as a QR code picture")
    p.add_argument("--scale", type=int, default=6, help="pixels per QR module in the PNG (default 6)")
    p.set_defaults(func=cmd_invite)


def cmd_invite(args) -> int:
    admin = keymod.load_private(args.key)
    if admin.owner != ADMIN:
        print(f"kiosk-admin invite: {args.key}: keys of {admin.owner!r}, not the admin's", file=sys.stderr)
        return 2
    try:
        token = issue_invitation(admin, args.resident, args.site, name=args.name, lifetime_s=args.lifetime)
    except ValueError as e:
        print(f"kiosk-admin invite: {e}", file=sys.stderr)
        return 2
    print(token)
    if args.out:
        qr = write_qr(token, args.out, scale=args.scale)
        expires = time.strftime("%H:%M:%S", time.localtime(time.time() + args.lifetime))
        print(f"invitation: {args.out} (QR version {qr.version}), good until {expires}", file=sys.stderr)
    return 0
