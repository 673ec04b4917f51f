"""``kiosk-admin events``: the reference consumer, as a command."""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from pathlib import Path

from ..config import MqttSettings
from ..csvsafe import text_cell
from ..sync import keys as keymod
from ..backend.consumer import Event, EventConsumer, Invalid, PrintSink, SeenIds
from ..sync.mqtt import tls_files
from ..sync.events.format import CLAIM_FIELDS
from .common import config_of

#: Exit status when some messages failed verification.
EXIT_INVALID = 3


def register(sub) -> None:
    p = sub.add_parser(
        "events",
        help="subscribe to devices' events, verify, decrypt, de-duplicate and print them",
        description="Subscribe to PREFIX/SITE/DEVICE/events, decrypt each event with the back end's private key, "
        "verify its signature against the devices' public keys, check that signer, claims and topic name the "
        "same device, drop duplicates by (site, device, event id), flag what is odd (\"flags\": seq_backwards, "
        "clock_ahead, late), and print one JSON line (or CSV row) per event. A message "
        "that fails any check is reported on stderr as {\"invalid\": REASON, ...} and never printed as an "
        f"event; the exit status is then {EXIT_INVALID}. Broker settings default to the config's [mqtt].",
    )
    p.add_argument("--key", type=Path, required=True, metavar="BACKEND_KEY", help="the back end's private key file (0600)")
    p.add_argument("--devices", type=Path, nargs="+", required=True, metavar="DEVICE_KEYS",
                   help="public key files of the devices whose events are accepted")
    p.add_argument("--broker", metavar="URL", help="mqtts://HOST:PORT (default: mqtt.url from the config)")
    p.add_argument("--ca", type=Path, help="CA certificate of the broker (default: mqtt.ca_file)")
    p.add_argument("--cert", type=Path, help="this consumer's client certificate (default: mqtt.client_cert)")
    p.add_argument("--tls-key", type=Path, help="its private key (default: mqtt.client_key)")
    p.add_argument("--site", default="+", help="only this site (default: all)")
    p.add_argument("--device", default="+", help="only this device (default: all)")
    p.add_argument("--share", metavar="GROUP", help="MQTT v5 shared subscription $share/GROUP/...: consumers in "
                   "one group split the events between them")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default jsonl)")
    p.add_argument("--output", type=Path, help="write events here instead of stdout")
    p.add_argument("--count", type=int, help="exit after this many new events")
    p.add_argument("--idle-timeout", type=float, help="exit after this many seconds without a message")
    p.add_argument("--seen", default="events-seen.db", metavar="FILE",
                   help="SQLite file of the events already printed, so that a replay after a restart is dropped "
                   "(default events-seen.db in the current folder; 'none': in memory only)")
    p.add_argument("--seen-days", type=float, default=30.0,
                   help="forget printed events after this many days (default 30; older replays are still flagged)")
    p.add_argument("--client-id", default=None, help="MQTT client id (default kiosk-consumer-PID)")
    p.add_argument("--session-expiry", type=int, default=0,
                   help="seconds the broker keeps this consumer's session and queues events while it is away")
    p.set_defaults(func=cmd_events)


def cmd_events(args) -> int:
    cfg = config_of(args)
    overrides = {"enabled": True}
    if args.broker:
        overrides["url"] = args.broker
    if args.ca:
        overrides["ca_file"] = args.ca.resolve()
    if args.cert:
        overrides["client_cert"] = args.cert.resolve()
    if args.tls_key:
        overrides["client_key"] = args.tls_key.resolve()
    settings = MqttSettings(**{**cfg.mqtt.model_dump(), **overrides})
    tls = tls_files(settings, Path.cwd())
    backend = keymod.load_private(args.key)
    devices = keymod.KeyRing.from_files(args.devices)

    # Appending to a file that already has rows: no second header.
    fresh = not args.output or not args.output.exists() or args.output.stat().st_size == 0
    out = open(args.output, "a", newline="", encoding="utf-8") if args.output else sys.stdout
    writer = _writer(args.format, out, header=fresh)
    done = threading.Event()
    state = {"events": 0, "last": time.monotonic()}

    def on_event(ev: Event) -> None:
        writer({**ev.claims, "flags": list(ev.flags)} if ev.flags else ev.claims)
        out.flush()
        state["events"] += 1
        state["last"] = time.monotonic()
        if args.count and state["events"] >= args.count:
            done.set()

    def on_invalid(inv: Invalid) -> None:
        state["last"] = time.monotonic()
        print(json.dumps({"invalid": inv.reason, "topic": inv.topic, "detail": inv.detail}), file=sys.stderr, flush=True)

    seen = SeenIds(None if args.seen == "none" else Path(args.seen), keep_days=args.seen_days)
    consumer = EventConsumer(
        settings, tls, backend, devices,
        sink=PrintSink(on_event, on_invalid, seen),
        client_id=args.client_id or f"kiosk-consumer-{__import__('os').getpid()}",
        site=args.site, device=args.device, share_group=args.share,
        session_expiry=args.session_expiry,
    )
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set()) if in_main else None
    try:
        consumer.start()
        while not done.wait(0.2):
            if args.idle_timeout and time.monotonic() - state["last"] >= args.idle_timeout:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        consumer.close()
        seen.close()
        if out is not sys.stdout:
            out.close()
    print(
        f"kiosk-admin events: {state['events']} events, {consumer.duplicates} duplicates dropped, "
        f"{consumer.invalid} invalid",
        file=sys.stderr,
    )
    return EXIT_INVALID if consumer.invalid else 0


#: CSV columns: the claims, then what the consumer flagged.
CSV_FIELDS = (*CLAIM_FIELDS, "flags")


def _writer(fmt: str, out, *, header: bool = True):
    if fmt == "jsonl":
        return lambda claims: out.write(json.dumps(claims, sort_keys=True) + "\n")
    w = csv.writer(out)
    if header:
        w.writerow(CSV_FIELDS)

    def row(claims):
        w.writerow([_cell(claims.get(k)) for k in CLAIM_FIELDS] + [text_cell(";".join(claims.get("flags") or ()))])

    return row


def _cell(v):
    """A claim as a CSV cell: numbers as they are, text that could run as a formula quoted (kiosk.csvsafe)."""
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, (int, float)):  # bool included: written as True/False
        return v
    return text_cell(str(v))
