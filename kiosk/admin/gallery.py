"""``kiosk-admin gallery``: publish the admin's enrollment database to a site's devices over MQTT."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from ..config import MqttSettings
from ..errors import ConfigError, KeyFileError
from ..gallery.erasure import erase_resident, reclaim
from ..gallery.store import Resident, open_store
from ..sync import keys as keymod
from ..sync.updates.admin import AdminGallery, AdminLink, Ledger, frames_for, plan
from ..sync.mqtt import tls_files
from .common import config_of

#: Exit statuses of ``publish``: some device refused; some device did not answer in time.
EXIT_REFUSED = 1
EXIT_NO_ANSWER = 4


def register(sub) -> None:
    p = sub.add_parser(
        "gallery",
        help="publish residents to a site's devices over MQTT (signed, encrypted), and see what they hold",
        description="Gallery updates: the admin's enrollment database (the one `kiosk-admin enroll` fills; "
        "--state-dir or device.state_dir of --config) is published to a site's devices, signed with the admin's "
        "key and encrypted to each device's key. See docs/gallery-updates.md.",
    )
    gs = p.add_subparsers(dest="gallery_command", metavar="WHAT", required=True)

    k = gs.add_parser("admin-key", help="make the admin's key pair (gallery updates are signed with it)",
                      description="Make the admin's key pair (Ed25519 signing, P-256 encryption) as JWK Sets: the "
                      "private file 0600, the public file beside it. Devices pin the public file "
                      "(keys.admin_public_key; a provisioning code brings it).")
    k.add_argument("--out", type=Path, default=Path("admin.jwks"), help="private key file (default admin.jwks)")
    k.add_argument("--public-out", type=Path, help="public key file (default admin.pub.jwks beside --out)")
    k.add_argument("--force", action="store_true", help="overwrite existing key files")
    k.set_defaults(func=cmd_admin_key)

    pub = gs.add_parser(
        "publish", help="send the site's devices what changed since the last update (or a snapshot)",
        description="Compare the enrollment database with what was last published to the site and publish a delta "
        "(QoS 1, PREFIX/SITE/gallery) of a new version; devices known to be behind (from their acks and retained "
        "status) also get a snapshot on PREFIX/SITE/DEVICE/gallery. --snapshot sends the whole gallery. Large "
        "updates are split into parts. Then waits for each device's signed ack and prints it. Exit status 0 when "
        f"every device applied it, {EXIT_REFUSED} when one refused, {EXIT_NO_ANSWER} when one did not answer.")
    _keys_args(pub)
    pub.add_argument("--key", type=Path, required=True, metavar="ADMIN_KEY", help="the admin's private key file (0600)")
    pub.add_argument("--snapshot", action="store_true", help="send the whole gallery as a new version")
    pub.add_argument("--valid-hours", type=float, default=168.0, help="hours the update may be applied (default 168)")
    pub.add_argument("--max-message-bytes", type=int, help="split into parts of at most this size "
                     "(default gallery.max_message_bytes of the config)")
    pub.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the devices' acks (default 30)")
    pub.add_argument("--dry-run", action="store_true", help="print what would be sent; publish nothing")
    pub.set_defaults(func=cmd_publish)

    ma = gs.add_parser(
        "match", help="publish a stricter match target to a site's devices (what `report site` suggests)",
        description="Publish a new gallery version (the residents as they are) that carries a stricter "
        "match.fpir_target for the site's devices, signed like every update. A device takes it only if it is at "
        "least as strict as its own target and any earlier one, and keeps it across restarts; a looser one is "
        "refused (reason looser_match) and changes nothing. No update loosens a device. Exit statuses as for "
        "publish. See docs/recognition.md.")
    _keys_args(ma)
    ma.add_argument("--key", type=Path, required=True, metavar="ADMIN_KEY", help="the admin's private key file (0600)")
    ma.add_argument("--fpir-target", type=float, required=True, metavar="RATE",
                    help="the stricter target: strangers accepted per visit, e.g. 0.0003")
    ma.add_argument("--valid-hours", type=float, default=168.0, help="hours the update may be applied (default 168)")
    ma.add_argument("--max-message-bytes", type=int, help="split into parts of at most this size "
                    "(default gallery.max_message_bytes of the config)")
    ma.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the devices' acks (default 30)")
    ma.add_argument("--dry-run", action="store_true", help="print what would be sent; publish nothing")
    ma.set_defaults(func=cmd_publish, snapshot=False)

    st = gs.add_parser("status", help="show the version each device acknowledged, and whether it is in step",
                       description="Read each device's retained ack (signature checked) and status from the broker "
                       "and print: state, acknowledged version, last result and reason, whether its gallery hash "
                       "equals the one published for that version, and whether it asks for a snapshot.")
    _keys_args(st)
    st.add_argument("--wait", type=float, default=3.0, help="seconds to collect retained messages (default 3)")
    st.add_argument("--json", action="store_true", help="one JSON object per device")
    st.set_defaults(func=cmd_status)

    er = gs.add_parser("erase", help="erase a resident from the enrollment database (publish to follow)",
                       description="Erase a resident, their templates and their delivered check-ins from the "
                       "admin's database (secure_delete, pages reclaimed). The next `gallery publish` erases them "
                       "on the site's devices.")
    er.add_argument("--id", required=True, help="resident id")
    er.add_argument("--state-dir", type=Path, help="override device.state_dir (the enrollment database)")
    er.set_defaults(func=cmd_erase)

    va = gs.add_parser("validity", help="set when a resident may be recognised (publish to follow)",
                       description="Set a resident's valid-from and valid-until (ISO 8601 date or time, Unix "
                       "seconds, or 'none'). Outside them a device does not recognise the resident, update or not.")
    va.add_argument("--id", required=True, help="resident id")
    va.add_argument("--from", dest="valid_from", help="valid from (default: unchanged)")
    va.add_argument("--until", dest="valid_until", help="valid until (default: unchanged)")
    va.add_argument("--state-dir", type=Path, help="override device.state_dir (the enrollment database)")
    va.set_defaults(func=cmd_validity)

    from .review import register as register_review

    register_review(gs)


def _keys_args(p, *, devices_required: bool = True) -> None:
    p.add_argument("--devices", type=Path, nargs="+", required=devices_required, metavar="DEVICE_KEYS",
                   help="public key files of the site's devices (updates are encrypted to them, acks checked)")
    p.add_argument("--site", help="site id (default: device.site of the config)")
    p.add_argument("--state-dir", type=Path, help="override device.state_dir (the enrollment database)")
    p.add_argument("--broker", metavar="URL", help="mqtts://HOST:PORT (default: mqtt.url of the config)")
    p.add_argument("--ca", type=Path, help="CA certificate of the broker (default: mqtt.ca_file)")
    p.add_argument("--cert", type=Path, help="this client's certificate (default: mqtt.client_cert)")
    p.add_argument("--tls-key", type=Path, help="its private key (default: mqtt.client_key)")


def _link(cfg, args, site: str, ring) -> AdminLink:
    overrides = {"enabled": True}
    for name, key in (("broker", "url"), ("ca", "ca_file"), ("cert", "client_cert"), ("tls_key", "client_key")):
        value = getattr(args, name)
        if value:
            overrides[key] = value if name == "broker" else Path(value).resolve()
    settings = MqttSettings(**{**cfg.mqtt.model_dump(), **overrides})
    return AdminLink(settings, tls_files(settings, cfg.device.state_dir), site=site, devices=ring)


def _devices(paths: list[Path], site: str) -> dict[str, keymod.PartyKeys]:
    """The site's devices' public keys; two different keys for one device are refused (one code, two kiosks?)."""
    out: dict[str, keymod.PartyKeys] = {}
    where: dict[str, Path] = {}
    for path in paths:
        for party in keymod.load_public(path):
            dsite, _, device = party.owner.partition("/")
            if dsite != site or not device:
                raise KeyFileError(f"{path}: keys of {party.owner!r}, not of a device of site {site!r}")
            if device in out and out[device].signing_kid != party.signing_kid:
                raise KeyFileError(
                    f"{path} and {where[device]}: two different keys for {party.owner} (two kiosks provisioned as "
                    "one device?). Only one kiosk may hold an identity: reset the other and give it its own code")
            out[device], where[device] = party, path
    return out


def cmd_admin_key(args) -> int:
    public_out = args.public_out or args.out.with_name("admin.pub.jwks")
    for path in (args.out, public_out):
        if path.exists() and not args.force:
            raise KeyFileError(f"{path}: exists; refusing to overwrite a key (--force to replace it)")
    party = keymod.generate("admin")
    keymod.save_private(args.out, party, overwrite=args.force)
    keymod.save_public(public_out, party, overwrite=args.force)
    print(f"private key: {args.out} (0600)\npublic key:  {public_out} (give it to the devices)")
    return 0


def cmd_publish(args) -> int:
    cfg = config_of(args)
    site = args.site or cfg.device.site
    admin = keymod.load_private(args.key)
    devices = _devices(args.devices, site)
    store = open_store(cfg)
    try:
        gallery = AdminGallery.read(store)
        ledger = Ledger(store, site)
        max_bytes = args.max_message_bytes or cfg.gallery.max_message_bytes
        lifetime = args.valid_hours * 3600
        match = _match_of(args)
        if args.dry_run:
            p = plan(gallery, ledger, sorted(devices), {}, force_snapshot=args.snapshot, lifetime_s=lifetime,
                     match=match)
            _print_plan(p, site)
            return 0
        ring = keymod.KeyRing(devices.values())
        with _link(cfg, args, site, ring) as link:
            link.wait(lambda views: all(d in views for d in devices), 2.0)  # retained acks and statuses
            known = ledger.known(link.views(), sorted(devices))  # signed acks only, the newest ever seen
            p = plan(gallery, ledger, sorted(devices), known, force_snapshot=args.snapshot, lifetime_s=lifetime,
                     match=match)
            _print_plan(p, site, known)
            if not p.sends:
                return 0
            expect: dict[str, str] = {}
            for send in p.sends:
                frames = frames_for(send, admin, devices, max_bytes)
                topic = link.device_topic(send.device) if send.device else link.site_topic()
                link.publish(topic, frames)
                if p.record and send.claims["update_id"] == p.record[2]:
                    ledger.record(*p.record, gallery)
                for d in send.recipients:
                    expect[d] = send.claims["update_id"]

            def answered(views) -> bool:
                return all(d in views and views[d].ack and views[d].ack.get("update_id") == u for d, u in expect.items())

            link.wait(answered, args.wait)
            views = link.views()
            ledger.known(views, sorted(devices))
    finally:
        store.db.close()
    return _print_acks(expect, views)


def _match_of(args) -> dict | None:
    """``gallery match``'s target as the update's ``match`` field (None for ``publish``)."""
    target = getattr(args, "fpir_target", None)
    if target is None:
        return None
    if not 0 < target <= 1:
        raise ConfigError(f"--fpir-target {target:g}: a rate above 0 and at most 1")
    return {"fpir_target": target}


def _print_plan(p, site: str, views=None) -> None:
    print(f"site {site}: {p.why}")
    for device, v in sorted((views or {}).items()):
        if v.ack_error:
            held = f"version {v.version} (ack of {v.time:.0f})" if v.ack else "nothing known"
            print(f"  warning: {device}: {v.ack_error}; planned on its last verified ack: {held}")
    for send in p.sends:
        c = send.claims
        where = f"device {send.device}" if send.device else f"site ({len(send.recipients)} device(s))"
        print(f"  {send.kind} version {c['version']}" + (f" on {c['base']}" if send.kind == "delta" else "")
              + f": {len(c['ops'])} operation(s) to {where}, digest {c['digest'][:16]}…")


def _print_acks(expect: dict[str, str], views) -> int:
    status = 0
    for device in sorted(expect):
        v = views.get(device)
        ack = v.ack if v else None
        if not ack or ack.get("update_id") != expect[device]:
            print(f"  {device}: no answer" + (f" ({v.ack_error})" if v and v.ack_error else ""))
            status = max(status, EXIT_NO_ANSWER)
            continue
        line = f"  {device}: {ack['result']} — holds version {ack['version']}, digest {str(ack['digest'])[:16]}…"
        if ack["result"] != "applied":
            line += f" ({ack['reason']}: {ack.get('detail')})"
            status = max(status, EXIT_REFUSED)
        print(line)
    return status


def cmd_status(args) -> int:
    cfg = config_of(args)
    site = args.site or cfg.device.site
    devices = _devices(args.devices, site)
    store = open_store(cfg)
    try:
        ledger = Ledger(store, site)
        last = ledger.last()
        with _link(cfg, args, site, keymod.KeyRing(devices.values())) as link:
            # Retained messages come at once; wait (up to --wait) for both of each device.
            link.wait(lambda views: all(d in views and views[d].state and views[d].ack for d in devices), args.wait)
            views = ledger.known(link.views(), sorted(devices))
        rows = []
        for device in sorted(devices):
            v = views.get(device)
            ack = v.ack if v else None
            acked = ack.get("version") if ack else None
            expected = ledger.digest_of(acked) if acked else None
            rows.append({
                "device": device, "state": v.state if v else None, "acked_version": acked,
                "result": ack.get("result") if ack else None, "reason": ack.get("reason") if ack else None,
                "in_step": (ack.get("digest") == expected) if expected else None,
                "wants_snapshot": v.wants_snapshot if v else None, "ack_time": ack.get("time") if ack else None,
                "error": v.ack_error if v else "nothing heard",
            })
    finally:
        store.db.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"site {site}: published version {last.version if last else 0}"
          + (f" ({last.kind}, digest {last.digest[:16]}…)" if last else ""))
    print(f"{'device':<20} {'state':<8} {'acked':>6} {'result':<8} {'in step':<8} {'snapshot?':<9} reason")
    for r in rows:
        step = {True: "yes", False: "NO", None: "?"}[r["in_step"]]
        print(f"{r['device']:<20} {str(r['state'] or '-'):<8} {str(r['acked_version'] or '-'):>6} "
              f"{str(r['result'] or '-'):<8} {step:<8} {str(bool(r['wants_snapshot'])).lower():<9} "
              f"{r['reason'] or r['error'] or ''}")
    return 0


def cmd_erase(args) -> int:
    store = open_store(config_of(args))
    try:
        with store.db.atomic():
            erased = erase_resident(store.db, args.id)
        reclaim(store.db)
    finally:
        store.db.close()
    if not erased.resident:
        print(f"kiosk-admin gallery erase: no resident {args.id!r}", file=sys.stderr)
        return 1
    print(f"{args.id}: erased ({erased.templates} template(s), {erased.checkins} check-in(s)); "
          "run `kiosk-admin gallery publish` to erase it on the devices")
    return 0


def _when(text: str | None, current: float | None) -> float | None:
    if text is None:
        return current
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"kiosk-admin gallery validity: {text!r} is not a date, a time or Unix seconds") from None
    return (t if t.tzinfo else t.astimezone()).timestamp()


def cmd_validity(args) -> int:
    store = open_store(config_of(args))
    try:
        current = store.residents().get(args.id)
        if current is None:
            print(f"kiosk-admin gallery validity: no resident {args.id!r}", file=sys.stderr)
            return 1
        r = Resident(current.id, current.name, _when(args.valid_from, current.valid_from),
                     _when(args.valid_until, current.valid_until))
        if r.valid_from is not None and r.valid_until is not None and r.valid_until <= r.valid_from:
            print("kiosk-admin gallery validity: --until must be after --from", file=sys.stderr)
            return 2
        store.upsert_resident(r)
    finally:
        store.db.close()
    print(f"{args.id}: valid from {r.valid_from} until {r.valid_until}; run `kiosk-admin gallery publish`")
    return 0
