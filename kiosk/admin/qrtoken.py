"""``kiosk-admin qr-token``: issue a resident's QR credential, as the back end does (for testing)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..qrtoken import issue_token
from ..sync import keys as keymod
from .provision import write_qr


def register(sub) -> None:
    p = sub.add_parser(
        "qr-token",
        help="issue a resident's short-lived QR credential (for testing)",
        description="Issue a resident's QR credential as the back end would: a compact JWS signed with the back "
        "end's private key, naming the resident, the site, the door (device) it is for, an expiry a few "
        "minutes ahead and a random nonce. Prints the token; --out also writes it as a QR code PNG to show to "
        "that kiosk's camera. Each token opens that one door, once; every other door refuses it.",
    )
    p.add_argument("--backend-key", type=Path, required=True, metavar="FILE", help="the back end's private keys (0600)")
    p.add_argument("--resident", required=True, metavar="ID", help="the resident's opaque id")
    p.add_argument("--site", required=True, help="the site the credential is good for")
    p.add_argument("--door", required=True, metavar="DEVICE", help="the device id of the one door it opens")
    p.add_argument("--lifetime", type=float, default=120.0, help="seconds until it expires (default 120)")
    p.add_argument("--out", type=Path, metavar="PNG", help="also write it as a QR code picture")
    p.add_argument("--scale", type=int, default=6, help="pixels per QR module in the PNG (default 6)")
    p.set_defaults(func=cmd_qr_token)


def cmd_qr_token(args) -> int:
    backend = keymod.load_private(args.backend_key)
    if backend.owner != keymod.BACKEND:
        print(f"kiosk-admin qr-token: {args.backend_key}: keys of {backend.owner!r}, not the back end's", file=sys.stderr)
        return 2
    try:
        token = issue_token(backend, args.resident, args.site, args.door, lifetime_s=args.lifetime)
    except ValueError as e:
        print(f"kiosk-admin qr-token: {e}", file=sys.stderr)
        return 2
    print(token)
    if args.out:
        qr = write_qr(token, args.out, scale=args.scale)
        expires = time.strftime("%H:%M:%S", time.localtime(time.time() + args.lifetime))
        print(f"QR credential: {args.out} (QR version {qr.version}), good until {expires}", file=sys.stderr)
    return 0
