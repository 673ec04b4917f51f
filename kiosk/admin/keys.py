"""``kiosk-admin keys``: make the device's and the back end's JOSE key pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import KeyFileError
from ..sync import keys as keymod
from .common import config_of


def register(sub) -> None:
    p = sub.add_parser(
        "keys",
        help="make device and back-end key pairs (JWK files) and print public halves",
        description="Make JOSE key pairs as JWK Set files. Each party gets an Ed25519 signing key and a P-256 "
        "encryption key. The private file is written 0600 and never overwritten without --force; the public "
        "half is written beside it and printed on stdout. Devices sign events with their key and encrypt them "
        "to the back end's public key; the back end decrypts with its private file.",
    )
    ks = p.add_subparsers(dest="keys_command", metavar="WHAT", required=True)

    d = ks.add_parser(
        "device",
        help="make this device's key pair",
        description="Make a device key pair. Site and device id come from --site/--device or the config "
        "(device.site, device.device_id); they are written into the key ids, and the back end checks that "
        "each event names the device that signed it. Put the private file where keys.device_key points "
        "(mode 0600), give the public file to the back end.",
    )
    d.add_argument("--site", help="site id (default: device.site from the config)")
    d.add_argument("--device", help="device id (default: device.device_id from the config)")
    d.add_argument("--out", type=Path, default=Path("device.jwks"), help="private key file (default device.jwks)")
    d.add_argument("--public-out", type=Path, help="public key file (default SITE.DEVICE.pub.jwks beside --out)")
    d.add_argument("--force", action="store_true", help="overwrite existing key files")
    d.set_defaults(func=cmd_device)

    b = ks.add_parser(
        "backend",
        help="make the back end's key pair",
        description="Make the back end's key pair. Keep the private file on the back end (0600); copy the "
        "public file to every device (keys.backend_public_key).",
    )
    b.add_argument("--out", type=Path, default=Path("backend.jwks"), help="private key file (default backend.jwks)")
    b.add_argument("--public-out", type=Path, help="public key file (default backend.pub.jwks beside --out)")
    b.add_argument("--force", action="store_true", help="overwrite existing key files")
    b.set_defaults(func=cmd_backend)

    s = ks.add_parser(
        "show",
        help="print the public half of a key file",
        description="Print the public keys in a JWK Set file (private or public) as a JWK Set. A private file "
        "readable by others is refused.",
    )
    s.add_argument("file", type=Path, metavar="FILE", help="a JWK Set file, private or public")
    s.set_defaults(func=cmd_show)


def _make(owner: str, out: Path, public_out: Path, force: bool) -> int:
    for path in (out, public_out):
        if path.exists() and not force:
            raise KeyFileError(f"{path}: exists; refusing to overwrite a key (--force to replace it)")
    party = keymod.generate(owner)
    keymod.save_private(out, party, overwrite=force)
    keymod.save_public(public_out, party, overwrite=force)
    print(json.dumps(party.to_jwks(private=False), indent=2))
    print(f"private keys: {out} (0600)\npublic keys:  {public_out}", file=sys.stderr)
    return 0


def cmd_device(args) -> int:
    cfg = config_of(args)
    site = args.site or cfg.device.site
    device = args.device or cfg.device.device_id
    for name, value in (("site", site), ("device", device)):
        if not value or "/" in value or any(c.isspace() for c in value):
            print(f"kiosk-admin keys: bad {name} {value!r}", file=sys.stderr)
            return 2
    public_out = args.public_out or args.out.with_name(f"{site}.{device}.pub.jwks")
    return _make(keymod.device_owner(site, device), args.out, public_out, args.force)


def cmd_backend(args) -> int:
    public_out = args.public_out or args.out.with_name("backend.pub.jwks")
    return _make(keymod.BACKEND, args.out, public_out, args.force)


def cmd_show(args) -> int:
    parties = keymod.load_public(args.file)
    keys_ = [k for p in parties for k in p.to_jwks(private=False)["keys"]]
    print(json.dumps({"keys": keys_}, indent=2))
    return 0
