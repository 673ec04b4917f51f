"""``kiosk selftest``: what an installer runs to see that the kiosk can work.

Each check says ok, warn, FAIL or skipped, with one line of detail. Checks
only read: the database is opened read-only, the door is not opened, and
nothing is created in the state directory (run as root, that would leave
files the daemon's user cannot write).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import shutil
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from .config import KioskConfig, load_config

log = logging.getLogger(__name__)

OK, WARN, FAIL, SKIPPED = "ok", "warn", "FAIL", "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    detail: str
    seconds: float = 0.0


class Skip(Exception):
    """The check does not apply (the part is not configured)."""


class Warn(Exception):
    """Works, but an installer should look."""


@dataclass
class Context:
    config: KioskConfig
    pin_factory: object | None = None
    camera_timeout: float = 10.0
    broker_timeout: float | None = None
    location_timeout: float = 10.0


# -- the checks ----------------------------------------------------------------


def check_camera(ctx: Context) -> str:
    from .capture import open_source

    cfg = ctx.config
    source = open_source(cfg.capture.source, cfg.capture)
    box: dict = {}

    def grab():
        try:
            source.start()
            box["frame"] = source.read()
        except BaseException as e:  # reported below
            box["error"] = e

    t0 = time.monotonic()
    reader = threading.Thread(target=grab, name="selftest-camera", daemon=True)
    reader.start()
    reader.join(ctx.camera_timeout)
    try:
        if reader.is_alive():
            raise RuntimeError(f"no frame from {cfg.capture.source} within {ctx.camera_timeout:.0f} s")
        if "error" in box:
            raise box["error"]
        image = box["frame"].image
    finally:
        if not reader.is_alive():
            source.close()
    h, w = image.shape[:2]
    mean = float(image.mean())
    detail = f"{w}x{h} frame from {cfg.capture.source} in {time.monotonic() - t0:.1f} s, mean brightness {mean:.0f}"
    if mean < 8:
        raise RuntimeError(detail + ": the picture is black (lens cap? no light?)")
    if mean > 248:
        raise Warn(detail + ": the picture is white (facing a light?)")
    return detail


def check_models(ctx: Context) -> str:
    from .match import models

    names = [f"landmarks{ctx.config.detect.landmarks}", "resnet"]
    for name in names:
        models.load(name)
    models.hog_detector()
    return f"HOG detector, {', '.join(models.FILES[n] for n in names)} loaded from {models.models_dir()}"


def check_gallery(ctx: Context) -> str:
    from .gallery.templates import TemplateCipher

    cfg = ctx.config
    path = cfg.database_path
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: the kiosk has not been provisioned")
    # Read-only, and no new files: a self-test run as root must not leave a
    # -shm the daemon's user cannot open. With the daemon running its WAL
    # files exist and are shared; without it, nothing writes and the file
    # can be read as immutable.
    running = Path(f"{path}-shm").exists()
    mode = "mode=ro" if running else "mode=ro&immutable=1"
    conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True, timeout=5)
    try:
        residents = conn.execute("SELECT count(*) FROM residents").fetchone()[0]
        templates = conn.execute("SELECT count(*) FROM templates").fetchone()[0]
        searched = conn.execute("SELECT count(DISTINCT resident_id) FROM templates").fetchone()[0]
        sample = conn.execute("SELECT resident_id, vector FROM templates ORDER BY id LIMIT 1").fetchone()
        from .gallery.store import FPIR_CAP_KEY

        cap = conn.execute("SELECT value FROM meta WHERE key = ?", [FPIR_CAP_KEY]).fetchone()
        events = _recent_events(conn)
    except sqlite3.DatabaseError as e:
        raise RuntimeError(f"{path}: {e}") from e
    finally:
        conn.close()
    detail = f"{residents} residents, {templates} templates in {path}"
    if sample is not None:
        key = cfg.state_path(cfg.storage.template_key)
        TemplateCipher.from_file(key, create=False).open(sample[1], sample[0])
        detail += ", template key opens them"
    if residents == 0:
        raise Warn(detail + ": nobody is enrolled yet")
    return _recognition(cfg, searched, detail, cap=float(cap[0]) if cap else None, events=events, templates=templates)


def _recent_events(conn: sqlite3.Connection) -> list[dict]:
    """The outbox's recent face visits and check-ins (what the door's own site estimate reads)."""
    from .siteestimate import DOOR_WINDOW_S, EVENT_TYPES

    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'checkins'").fetchone():
        return []
    rows = conn.execute(f"SELECT type, claims FROM checkins WHERE created_at >= ? AND type IN "
                        f"({','.join('?' * len(EVENT_TYPES))})", [time.time() - DOOR_WINDOW_S, *EVENT_TYPES])
    return [{"type": t, "claims": json.loads(c)} for t, c in rows]


def _recognition(cfg: KioskConfig, residents: int, detail: str, *, cap: float | None = None,
                 events: list[dict] | None = None, templates: int | None = None) -> str:
    """The operating point at this gallery's size, and what it is expected to give (Warn: target not met);
    beside it, this door's own estimate from its strangers (Warn: they crowd the threshold)."""
    from .match.calibration import operating_point, summary
    from .siteestimate import door_estimate, load_points

    point = operating_point(cfg.match, residents, cap=cap, templates=templates)
    detail += "; " + summary(point)
    if cap is not None and point.source == "calibration":
        detail += f"; target capped at {cap:g} by a signed gallery update"
    site = door_estimate(events or [], load_points())
    detail += "; this door: " + site["summary"]
    if site["crowded"]:
        raise Warn(detail)
    if point.second_factor and not cfg.qr_credential.enabled:
        raise Warn(detail + "; but qr_credential.enabled is false: no credential can confirm a face")
    if not point.met and not point.second_factor:
        raise Warn(detail)
    return detail


def check_gpio(ctx: Context) -> str:
    from .door import Panel

    g = ctx.config.gpio
    if not g.enabled:
        raise Skip("not configured (gpio.enabled = false)")
    with Panel(g, pin_factory=ctx.pin_factory) as panel:
        parts = [f"relay {g.relay_pin} ({'active-low' if g.relay_active_low else 'active-high'}, released)"]
        for label, pin in (("green", g.green_led_pin), ("red", g.red_led_pin), ("buzzer", g.buzzer_pin),
                           ("PIR", g.pir_pin), ("exit button", g.exit_button_pin)):
            if pin:
                parts.append(f"{label} {pin}")
        if panel.someone_there:
            parts.append("PIR sees motion now")
    return "claimed " + ", ".join(parts)


def check_broker(ctx: Context) -> str:
    from .sync.mqtt import new_client, reason_value, tls_files

    cfg = ctx.config
    m = cfg.mqtt
    if not m.enabled:
        raise Skip("not configured (mqtt.enabled = false)")
    tls = tls_files(m, base=cfg.device.state_dir)
    client = new_client(m, f"{cfg.device.device_id}-selftest", tls)
    done = threading.Event()
    result: dict = {}

    def on_connect(client, userdata, flags, rc, properties=None):
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    timeout = ctx.broker_timeout or m.connect_timeout
    t0 = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive)
    except OSError as e:
        raise RuntimeError(f"cannot connect to {m.address}: {e}") from e
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise RuntimeError(f"no CONNACK from {m.address} within {timeout:.0f} s")
        rc = result["rc"]
        if reason_value(rc) != 0:
            raise RuntimeError(f"{m.address} refused the connection: {rc}")
        sock = client.socket()
        version = sock.version() if tls is not None and hasattr(sock, "version") else None
        client.disconnect()
    finally:
        client.loop_stop()
    how = f"TLS ({version}, client certificate)" if tls is not None else "plain MQTT (local bridge)"
    return f"connected to {m.address} over {how} in {time.monotonic() - t0:.1f} s"


# adjtimex(2): the kernel's view of clock discipline, as NTP daemons leave it.
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),  # the remaining fields, unused
    ]


def clock_synchronised() -> tuple[bool, float]:
    """(synchronised, estimated max error in seconds) from adjtimex."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    tx = _Timex()
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC, tx.maxerror / 1e6


def check_clock(ctx: Context) -> str:
    synced, maxerror = clock_synchronised()
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if not synced:
        raise RuntimeError(f"clock not synchronised ({now}): check-in times cannot be trusted; is NTP reachable?")
    return f"synchronised ({now}, max error {maxerror:.3f} s)"


def check_location(ctx: Context) -> str:
    from .location import GpsdProvider, ServiceLocation, distance_m

    loc = getattr(ctx.config, "location", None)
    if loc is None or loc.provider == "none":
        raise Skip("not configured")
    service = ServiceLocation(loc.latitude, loc.longitude, loc.radius_m)
    if not service.known:
        raise Skip("not configured (no service location set)")
    where = f"{loc.latitude:.5f},{loc.longitude:.5f} within {loc.radius_m:.0f} m"
    if loc.provider == "fixed":
        return f"fixed at {where} (set by the installer)"
    if loc.provider != "gpsd":
        raise Skip(f"location.provider = {loc.provider}: not checked by the self-test")
    gps = GpsdProvider(loc.gpsd_host, loc.gpsd_port, connect_timeout=min(5.0, ctx.location_timeout))
    gps.start()
    try:
        deadline = time.monotonic() + ctx.location_timeout
        while gps.current() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        fix = gps.current()
    finally:
        gps.close()
    if fix is None:
        why = gps.last_error or (f"{gps.reports} reports, none with a fix" if gps.connects else "no connection")
        raise RuntimeError(f"no fix from gpsd at {loc.gpsd_host}:{loc.gpsd_port} in {ctx.location_timeout:.0f} s ({why})")
    d = distance_m(fix.latitude, fix.longitude, loc.latitude, loc.longitude)
    acc = f" ±{fix.accuracy_m:.0f} m" if fix.accuracy_m is not None else ""
    detail = f"gpsd fix {d:.0f} m{acc} from the service location {where}"
    if d > loc.radius_m + (fix.accuracy_m or 0.0):
        raise RuntimeError(detail + ": out of range")
    return detail


def check_disk(ctx: Context) -> str:
    cfg = ctx.config
    path = Path(cfg.device.state_dir)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    need = int((2 * cfg.outbox.disk_budget_mb + 100) * 1024 * 1024)
    detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB on {path}"
    if usage.free < need:
        raise RuntimeError(f"{detail}; needs {need / 2**20:.0f} MiB (twice the outbox budget + 100 MiB)")
    return detail


CHECKS: dict[str, Callable[[Context], str]] = {
    "camera": check_camera,
    "models": check_models,
    "gallery": check_gallery,
    "gpio": check_gpio,
    "broker": check_broker,
    "clock": check_clock,
    "location": check_location,
    "disk": check_disk,
}


def run_checks(ctx: Context, only: list[str] | None = None) -> list[CheckResult]:
    results = []
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            status, detail = OK, check(ctx)
        except Skip as e:
            status, detail = SKIPPED, str(e)
        except Warn as e:
            status, detail = WARN, str(e)
        except Exception as e:  # every failure is reported, none stops the others
            log.debug("self-test %s failed", name, exc_info=True)
            status, detail = FAIL, f"{type(e).__name__}: {e}" if not str(e) else str(e)
        results.append(CheckResult(name, status, detail, round(time.monotonic() - t0, 3)))
    return results


def format_table(results: list[CheckResult]) -> str:
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'CHECK':<{width}}  {'RESULT':<7}  DETAIL"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {r.detail}")
    failed = [r.name for r in results if r.status == FAIL]
    lines.append("")
    lines.append(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    return "\n".join(lines)


# -- `kiosk selftest` ------------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "selftest",
        help="check camera, models, gallery, GPIO, broker, clock, location and disk",
        description="Check that this kiosk can work: " + ", ".join(CHECKS) + ". Prints a table (or JSON); "
        "exits 1 if any check failed. Reads only: the door is not opened and nothing is written.",
    )
    p.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    p.add_argument("--source", metavar="SPEC", help="override capture.source for the camera check")
    p.add_argument("--only", action="append", choices=list(CHECKS), metavar="CHECK",
                   help="run only this check (repeatable): " + ", ".join(CHECKS))
    p.add_argument("--camera-timeout", type=float, default=10.0, metavar="S", help="seconds to wait for a frame")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_selftest)


def _with_provisioning(cfg: KioskConfig) -> KioskConfig:
    """What the daemon runs on: the config with the stored provisioning applied (site, location, broker, keys)."""
    from .errors import KioskError
    from .provisioning.startup import provisioned_config

    try:
        return provisioned_config(cfg)[0]
    except KioskError as e:  # the daemon would refuse to start on it: say so, check the rest
        print(f"kiosk selftest: provisioning: {e}", file=sys.stderr)
        return cfg


def cmd_selftest(args) -> int:
    cfg = _with_provisioning(load_config(args.config)).with_overrides(source=args.source)
    results = run_checks(Context(cfg, camera_timeout=args.camera_timeout), args.only)
    failed = any(r.status == FAIL for r in results)
    if args.json:
        json.dump({"ok": not failed, "checks": [asdict(r) for r in results]}, sys.stdout, indent=2)
        print()
    else:
        print(format_table(results))
    return 1 if failed else 0
