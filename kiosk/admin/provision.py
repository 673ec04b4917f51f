"""``kiosk-admin fleet-key``, ``provision-qr`` and ``reset-qr``: the fleet operator's side of provisioning."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import segno

from ..errors import KeyFileError
from ..provisioning import bundle as bmod
from ..provisioning.trust import generate_root, load_root_private, save_root
from ..sync import keys as keymod


def register(sub) -> None:
    f = sub.add_parser(
        "fleet-key",
        help="make the fleet root key pair that provisioning codes are signed with",
        description="Make the fleet's root key: an Ed25519 key pair as JWK Sets. Keep the private file offline "
        "(0600); it signs provisioning codes and resets. The public file goes into every image as "
        "/etc/kiosk/fleet-root.pub (install.sh --fleet-key FILE).",
    )
    f.add_argument("--out", type=Path, default=Path("fleet-root.jwks"), help="private key file (default fleet-root.jwks)")
    f.add_argument("--public-out", type=Path, help="public key file (default fleet-root.pub beside --out)")
    f.add_argument("--force", action="store_true", help="overwrite existing key files")
    f.set_defaults(func=cmd_fleet_key)

    p = sub.add_parser(
        "provision-qr",
        help="write a signed provisioning QR code (PNG) for a site",
        description="Write a provisioning code for an installer: the site, its service address and position, "
        "the clock-in radius, the broker and its CA fingerprint, the back end's and the admins' public keys, "
        "and an expiry, signed with the fleet root key, as a QR code PNG. An unprovisioned kiosk shown the "
        "code takes it (see docs/provisioning.md).",
    )
    p.add_argument("--fleet-key", type=Path, required=True, metavar="FILE", help="the fleet's private root key (0600)")
    p.add_argument("--site", required=True, help="site id (letters, digits, '.', '_', '-')")
    p.add_argument("--device", help="device id for this kiosk (default: the one in the kiosk's config)")
    p.add_argument("--hardware", metavar="ID", help="the one kiosk the code is for: its hardware id, as `kiosk "
                   "provision --status` or the waiting kiosk's status prints it. The daemon alone at its camera "
                   "takes only a code bound to it (this, or the site and device its config names)")
    p.add_argument("--name", required=True, help="the site's name, as the installer knows it")
    p.add_argument("--address", required=True, help="the service address")
    p.add_argument("--lat", type=float, required=True, help="latitude of the service location (degrees, WGS 84)")
    p.add_argument("--lon", type=float, required=True, help="longitude of the service location (degrees, WGS 84)")
    p.add_argument("--radius", type=float, default=150.0, help="clock-in radius in metres (default 150)")
    p.add_argument("--broker", required=True, metavar="URL", help="MQTT broker, mqtts://HOST:PORT")
    ca = p.add_mutually_exclusive_group(required=True)
    ca.add_argument("--ca-file", type=Path, metavar="PEM", help="the broker's CA certificate (its SHA-256 is pinned)")
    ca.add_argument("--ca-sha256", metavar="FINGERPRINT", help="SHA-256 fingerprint of the broker's CA certificate")
    p.add_argument("--backend", type=Path, required=True, metavar="FILE", help="the back end's public keys (JWK Set)")
    p.add_argument("--admin", type=Path, required=True, metavar="FILE", help="the admins' public keys (JWK Set)")
    p.add_argument("--valid-hours", type=float, default=24.0, help="hours the code can be used (default 24)")
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="the QR code picture to write")
    _picture_options(p)
    p.set_defaults(func=cmd_provision_qr)

    r = sub.add_parser(
        "reset-qr",
        help="write a signed reset code (PNG) for one provisioned kiosk",
        description="Write a reset code, signed with the fleet root key, for one site and device. "
        "`kiosk provision --reset` takes it (from the camera or --code-file): the kiosk forgets its "
        "provisioning, keys, gallery and delivered events, and waits for a new provisioning code.",
    )
    r.add_argument("--fleet-key", type=Path, required=True, metavar="FILE", help="the fleet's private root key (0600)")
    r.add_argument("--site", required=True, help="site id of the kiosk to reset")
    r.add_argument("--device", required=True, help="device id of the kiosk to reset")
    r.add_argument("--valid-minutes", type=float, default=60.0, help="minutes the code can be used (default 60)")
    r.add_argument("--out", type=Path, required=True, metavar="PNG", help="the QR code picture to write")
    _picture_options(r)
    r.set_defaults(func=cmd_reset_qr)


def _picture_options(p) -> None:
    p.add_argument("--text-out", type=Path, metavar="FILE", help="also write the code as text (for --code-file)")
    p.add_argument("--scale", type=int, default=6, help="pixels per QR module in the PNG (default 6)")
    p.add_argument("--error", choices="lmqh", default="m", help="QR error correction level (default m: 15%%)")


def write_qr(code: str, out: Path, *, scale: int = 6, error: str = "m") -> segno.QRCode:
    """Write ``code`` (ASCII) as a QR code PNG with the standard 4-module quiet zone."""
    qr = segno.make(code, error=error, micro=False, boost_error=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    qr.save(str(out), kind="png", scale=scale, border=4)
    return qr


def _emit(code: str, args, what: str, summary: dict) -> int:
    qr = write_qr(code, args.out, scale=args.scale, error=args.error)
    if args.text_out:
        args.text_out.write_text(code + "\n", encoding="ascii")
    side = qr.symbol_size(scale=1, border=4)[0]
    print(json.dumps(summary, indent=2))
    print(f"{what}: {args.out} (QR version {qr.version}, {side}x{side} modules, {len(code)} characters)", file=sys.stderr)
    return 0


def cmd_fleet_key(args) -> int:
    public_out = args.public_out or args.out.with_name("fleet-root.pub")
    for path in (args.out, public_out):
        if path.exists() and not args.force:
            raise KeyFileError(f"{path}: exists; refusing to overwrite a key (--force to replace it)")
    key = generate_root()
    save_root(args.out, public_out, key, overwrite=args.force)
    print(json.dumps(keymod.jwk_dict(key, private=False), separators=(",", ":")))
    print(f"private root key: {args.out} (0600, keep it offline)\npublic root key:  {public_out}", file=sys.stderr)
    return 0


def cmd_provision_qr(args) -> int:
    root = load_root_private(args.fleet_key)
    if args.ca_file:
        from ..provisioning.store import certificates_in

        certs = certificates_in(args.ca_file.read_bytes())
        if len(certs) != 1:
            print(f"kiosk-admin provision-qr: {args.ca_file}: expected one certificate, found {len(certs)}", file=sys.stderr)
            return 2
        ca = bmod.ca_fingerprint(certs[0])
    else:
        try:
            ca = bmod.fingerprint_from_text(args.ca_sha256)
        except ValueError as e:
            print(f"kiosk-admin provision-qr: --ca-sha256: {e}", file=sys.stderr)
            return 2
    backend = keymod.load_public_one(args.backend)
    admin = keymod.load_public_one(args.admin)
    if backend.owner != keymod.BACKEND:
        print(f"kiosk-admin provision-qr: {args.backend}: keys of {backend.owner!r}, not the back end's", file=sys.stderr)
        return 2
    try:
        bundle = bmod.make_bundle(
            site=args.site, device_id=args.device, hardware_id=args.hardware.lower() if args.hardware else None,
            name=args.name, address=args.address, latitude=args.lat,
            longitude=args.lon, radius_m=args.radius, broker_url=args.broker, ca_sha256=ca,
            backend=backend, admin=admin, valid_s=args.valid_hours * 3600,
        )
    except ValueError as e:
        print(f"kiosk-admin provision-qr: {e}", file=sys.stderr)
        return 2
    if admin.owner != bmod.ADMIN:
        print(f"kiosk-admin provision-qr: note: {args.admin} holds keys of {admin.owner!r}; "
              f"the kiosk will know them as {bmod.ADMIN!r}", file=sys.stderr)
    code = bmod.sign_bundle(bundle, root)
    summary = bundle.summary() | {"signed_by": root.kid,
                                  "expires": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(bundle.expires_at))}
    return _emit(code, args, "provisioning code", summary)


def cmd_reset_qr(args) -> int:
    root = load_root_private(args.fleet_key)
    code = bmod.sign_reset(args.site, args.device, root, valid_s=args.valid_minutes * 60)
    summary = {"reset": f"{args.site}/{args.device}", "signed_by": root.kid,
               "valid_minutes": args.valid_minutes}
    return _emit(code, args, "reset code", summary)
