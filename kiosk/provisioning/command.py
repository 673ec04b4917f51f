"""``kiosk provision``: the installer's command on the device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import config_from_args
from ..errors import ConfigError, NotProvisioned, ProvisioningRefused
from ..logs import setup_logging
from .scan import CodeScanner, scan
from .store import DEVICE_PUBLIC_FILE, ProvisioningStore


def register(sub) -> None:
    p = sub.add_parser(
        "provision",
        help="bind this kiosk to its site with a signed provisioning QR code",
        description="Show the provisioning code to the camera (or give it with --code-file): the kiosk checks "
        "it against the fleet root key, then writes its site, service location, broker, the back end's and "
        "admins' keys and a new key pair of its own, in one step. A forged, expired, damaged or foreign code "
        "is refused with the reason. Re-provisioning needs a signed reset (--reset). Run it as the daemon's "
        "user with the daemon stopped; see docs/provisioning.md.",
    )
    p.add_argument("--config", metavar="FILE", help="config file (default: built-in defaults)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="override device.state_dir")
    p.add_argument("--source", metavar="SPEC", help="override capture.source (the camera to read codes from)")
    p.add_argument("--code-file", type=Path, metavar="FILE", help="read the code from a text file, not the camera")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a code (default 300)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="show the provisioning and exit")
    what.add_argument("--reset", action="store_true",
                      help="take a signed reset code: forget provisioning, keys, gallery and events")
    what.add_argument("--ca-file", type=Path, metavar="PEM", help="install the broker's CA certificate (must match the pin)")
    what.add_argument("--restore-keys", action="store_true",
                      help="write the back end's and the admins' public key files again from the signed code "
                      "(the kiosk refuses to start when they differ from it)")
    what.add_argument("--wifi-fingerprint", action="store_true",
                      help="record the Wi-Fi access points seen here (location.provider = \"wifi\")")
    p.add_argument("--discard-undelivered", action="store_true",
                   help="with --reset: go ahead even though check-in events have not been delivered")
    p.set_defaults(func=cmd_provision)


def _config(args):
    return config_from_args(args)


def cmd_provision(args) -> int:
    cfg = _config(args)
    setup_logging(cfg.logging.level, journald=False)
    store = ProvisioningStore(cfg)
    if args.wifi_fingerprint:
        return _wifi(cfg)
    if not store.enabled:
        why = "provisioning.enabled is false" if not cfg.provisioning.enabled else f"no fleet root key at {store.root_key_path}"
        raise ConfigError(f"cannot provision: {why} (install.sh --fleet-key FILE puts it there)")
    if args.status:
        return _status(store)
    if args.ca_file:
        path = store.install_ca(args.ca_file.read_bytes())
        print(f"broker CA certificate installed: {path}")
        return 0
    if args.restore_keys:
        bundle = store.restore_keys()
        print(f"restored from the provisioning code: back end {bundle.backend.signing_kid}, "
              f"admins {bundle.admin.signing_kid}")
        return 0
    if args.reset:
        def take(code):
            return store.reset(code, discard_undelivered=args.discard_undelivered)
    else:
        def take(code):
            return store.install(code, attended=True)
    if not args.reset and store.provisioned:
        raise ProvisioningRefused("already_provisioned", _already(store))
    try:
        result = take(args.code_file.read_bytes().strip()) if args.code_file else _from_camera(cfg, take, args.timeout)
    except ProvisioningRefused as e:
        print(f"kiosk provision: REFUSED: {e}", file=sys.stderr)
        return 1
    if result is None:
        print(f"kiosk provision: no {'reset' if args.reset else 'provisioning'} code taken", file=sys.stderr)
        return 1
    if args.reset:
        print(f"reset: {result.site}/{result.device_id or '(its device)'} is unprovisioned; "
              "run `kiosk provision` (or start the daemon) to provision it again")
        return 0
    print(json.dumps(result.summary(), indent=2))
    print(f"provisioned. Give the back end this kiosk's public key: {store.directory / DEVICE_PUBLIC_FILE}")
    print((store.directory / DEVICE_PUBLIC_FILE).read_text(), end="")
    return 0


def _already(store: ProvisioningStore) -> str:
    try:
        b = store.load()
        where = f"site {b.site}" if b else "a site"
    except NotProvisioned as e:
        where = f"a provisioning that does not verify ({e})"
    return f"already provisioned for {where}; re-provisioning needs a signed reset first (kiosk provision --reset)"


def _from_camera(cfg, take, timeout: float):
    from ..capture import open_source
    from ..capture.reader import CaptureThread

    def refused(e: ProvisioningRefused) -> None:
        print(f"kiosk provision: code REFUSED: {e}", file=sys.stderr)

    print(f"kiosk provision: show the code to the camera ({cfg.capture.source}); waiting up to {timeout:.0f} s",
          file=sys.stderr)
    capture = CaptureThread(open_source(cfg.capture.source, cfg.capture), cfg.capture)
    capture.start()
    try:
        scanner = CodeScanner(take, every=cfg.provisioning.scan_every, on_refused=refused)
        return scan(capture.get, scanner, timeout=timeout)
    finally:
        capture.stop()


def _status(store: ProvisioningStore) -> int:
    from .binding import hardware_id

    bundle = store.load()
    if bundle is None:
        print(json.dumps({"provisioned": False, "hardware_id": hardware_id(store.config),
                          "fleet_root_keys": store.roots().kids}, indent=2))
        return 1
    site, device = store.identity(bundle)
    out = {"provisioned": True, **bundle.summary(), "site": site, "device": device,
           "this_hardware_id": hardware_id(store.config), "directory": str(store.directory)}
    pub = store.directory / DEVICE_PUBLIC_FILE
    if pub.is_file():
        out["device_keys"] = [k["kid"] for k in json.loads(pub.read_text())["keys"]]
    print(json.dumps(out, indent=2))
    return 0


def _wifi(cfg) -> int:
    from ..location import iw_scan, take_fingerprint

    path = cfg.state_path(cfg.location.wifi_fingerprint)
    try:
        fp = take_fingerprint(lambda: iw_scan(cfg.location.wifi_interface), path)
    except RuntimeError as e:
        print(f"kiosk provision: {e}", file=sys.stderr)
        return 1
    print(f"Wi-Fi fingerprint: {len(fp['access_points'])} access points, written to {path}")
    return 0
