"""``kiosk-admin report``: what the back end's store holds, as tables, CSV and PNG charts; erasure."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigError
from ..backend import report as rep
from ..backend.sitereport import DEFAULT_DAYS, site_report
from ..backend.store import open_store
from ..siteestimate import DEFAULT_DELTA, DELTAS
from ..extra import need

#: ``report site --check``'s exit status when a site is crowded.
CROWDED_EXIT = 3

REPORTS = {
    "daily": "per resident and day: first and last check-in, how many, at which doors",
    "doors": "per door: check-ins, unknown faces, spoofs and other refusals, flagged events, last event",
    "hours": "check-ins and refusals per hour of the day",
    "refusals": "refusals and spoofs at the doors, and messages the back end refused, by reason",
    "resident": "every stored event of one resident (--id): what a resident asks to see",
    "site": "per site and door over a rolling window (--days): how close strangers come to the threshold against "
            "the calibration, the site's FPIR with its 95% bound, residents turned away (FNIR), a stricter target "
            "where strangers crowd the threshold",
}


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="reports on the back end's stored events (kiosk-ingest's store); erase one resident's records",
        description="Read the store that kiosk-ingest fills (SQLite or PostgreSQL) and print a report as a table "
        "or CSV, optionally with a PNG chart. Reports: " + "; ".join(f"{k}: {v}" for k, v in REPORTS.items())
        + ". 'erase --id R' deletes one resident's stored records; 'purge' deletes what is older than the "
        "retention period (kiosk-ingest does so by itself every hour).",
    )
    p.add_argument("what", choices=[*REPORTS, "erase", "purge"], help="the report, or erase / purge")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", metavar="URL", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    where.add_argument("--ingest-config", type=Path, metavar="FILE",
                       help="take the store from kiosk-ingest's config (/etc/kiosk/ingest.toml)")
    p.add_argument("--id", metavar="RESIDENT", help="the resident (resident, erase)")
    p.add_argument("--since", metavar="WHEN", help="from this day or time (YYYY-MM-DD, ISO 8601 or Unix seconds; "
                   "default: 7 days ago; the resident report: everything)")
    p.add_argument("--until", metavar="WHEN", help="until this day or time, excluded (default: now)")
    p.add_argument("--site", help="only this site")
    p.add_argument("--device", help="only this door (hours)")
    p.add_argument("--days", type=float, default=None, metavar="N",
                   help=f"site: the rolling window, the last N days (default {DEFAULT_DAYS:g}; --since overrides)")
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA, choices=DELTAS[1:], metavar="GAP",
                   help=f"site: the near-miss band, a gap of at most GAP above the threshold (default {DEFAULT_DELTA:g};"
                   f" one of {', '.join(f'{d:g}' for d in DELTAS[1:])})")
    p.add_argument("--check", action="store_true",
                   help=f"site: exit {CROWDED_EXIT} when a site's strangers crowd the threshold more than the "
                   "calibration expected (for monitoring)")
    p.add_argument("--tz", metavar="ZONE", help="time zone of days and hours, e.g. Asia/Shanghai (default: this "
                   "machine's)")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default table)")
    p.add_argument("--output", type=Path, help="write the report here instead of stdout")
    p.add_argument("--chart", type=Path, metavar="PNG", help="also draw the report as a PNG chart")
    p.add_argument("--retention-days", type=float, help="purge: delete events older than this many days "
                   "(default: the ingest config's [store] retention_days, else 400)")
    p.add_argument("--yes", action="store_true", help="erase / purge without asking")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    if args.chart:
        need("report --chart", "matplotlib")
    tz = None
    if args.tz:
        try:
            tz = ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"--tz {args.tz!r}: not a known time zone") from None
    retention = args.retention_days
    if args.ingest_config:
        from ..backend.config import load_ingest_config

        cfg = load_ingest_config(args.ingest_config)
        url = cfg.store_url
        retention = retention or cfg.store.retention_days
    else:
        url = args.store
    try:
        since = rep.parse_when(args.since, tz)
        until = rep.parse_when(args.until, tz)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.what in ("resident", "erase") and not args.id:
        raise ConfigError(f"report {args.what} needs --id RESIDENT")
    with open_store(url) as store:
        if args.what == "erase":
            return _erase(store, args)
        if args.what == "purge":
            return _purge(store, retention or 400.0, args.yes)
        found: list[dict] = []
        if since is None and args.what != "resident":
            since = time.time() - (args.days or DEFAULT_DAYS if args.what == "site" else 7) * 86400
        if args.what == "site":
            if args.chart:
                raise ConfigError("report site has no chart")
            table, found = site_report(store, since=since, until=until, site=args.site, delta=args.delta)
        elif args.what == "daily":
            table = rep.daily(store, since=since, until=until, tz=tz, site=args.site)
        elif args.what == "doors":
            table = rep.doors(store, since=since, until=until, site=args.site)
        elif args.what == "hours":
            table = rep.hours(store, since=since, until=until, tz=tz, site=args.site, device=args.device)
        elif args.what == "refusals":
            table = rep.refusals(store, since=since, until=until, site=args.site)
        else:
            table = rep.history(store, args.id, since=since, until=until, tz=tz)
    text = table.csv() if args.format == "csv" else table.text()
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.chart:
        rep.chart(table, args.chart)
        print(f"chart: {args.chart}", file=sys.stderr)
    if args.check and any(f["estimate"].crowded for f in found):
        return CROWDED_EXIT
    return 0


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} Not asked (no terminal): add --yes.", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _erase(store, args) -> int:
    n = len(list(store.events(resident_id=args.id)))
    if not _confirm(f"Erase {n} stored events of resident {args.id} from {store.describe()}?", args.yes):
        return 1
    erased = rep.erase_resident(store, args.id)
    print(f"erased {erased} stored events of resident {args.id}")
    return 0


def _purge(store, days: float, yes: bool) -> int:
    if not _confirm(f"Delete events and refusals older than {days:g} days from {store.describe()}?", yes):
        return 1
    events, refused = store.purge(days * 86400)
    print(f"deleted {events} events and {refused} refusals older than {days:g} days")
    return 0
