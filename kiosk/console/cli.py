"""``kiosk-console``: serve the console (waitress), or make its first admin from the command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading

from ..cliopts import add_common_options, default_config, validate_target
from ..errors import ConfigError, KeyFileError, KioskError
from ..logs import setup_logging
from ..notify import Notifier
from .config import CONFIG_ENV, DEFAULT_PATH, load_console_config

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiosk-console",
        description="The property manager's web console: residents (enroll from photos, change, QR credentials, "
        "erase), doors (status, gallery versions, provisioning and reset codes) and check-ins (today's, the "
        "attendance report with CSV, refusals and spoofs), for per-person accounts (admin or viewer). It reads "
        "and writes kiosk-ingest's store and publishes signed gallery updates over MQTT. See docs/console.md.",
    )
    add_common_options(p, config_help=f"settings (default: ${CONFIG_ENV}, else {DEFAULT_PATH}; every key is "
                       "documented in config/console.toml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="serve the console (the default): waitress on [console] host and port",
                   description="Serve the console with waitress on [console] host and port (loopback by default: "
                   "put a TLS reverse proxy in front, docs/console.md). Runs until SIGTERM.")
    for name, role in (("create-admin", "admin"), ("add-user", None)):
        a = sub.add_parser(name, allow_abbrev=False, help=f"make {'an admin' if role else 'an'} account from the command line "
                           "(the password from a prompt, or stdin with --password-stdin)",
                           description="Make a console account. The password is asked twice at the terminal, or "
                           "read as the first line of standard input with --password-stdin; never an argument "
                           "(other users could read it in the process list). The change is in the audit log.")
        a.add_argument("--username", required=True, help="the person's user name")
        if role is None:
            a.add_argument("--role", choices=("admin", "viewer"), default="viewer", help="role (default viewer)")
        a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        a.set_defaults(role=role)
    return p


def _password(args) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def _create(config, args) -> int:
    from ..backend.store import open_store
    from .accounts import Accounts

    password = _password(args)
    with open_store(config.store_url) as store:
        Accounts(store).create(args.username, password, args.role, actor="command line", remote="local")
    print(f"kiosk-console: account {args.username} made ({args.role})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.config = default_config(args.config, env=CONFIG_ENV, system=DEFAULT_PATH) or str(DEFAULT_PATH)
    if args.validate_config:
        args.config = validate_target(args)
    try:
        config = load_console_config(args.config)
        if args.validate_config:
            print(f"{args.config}: OK")
            return 0
        setup_logging(config.logging.level, journald=config.logging.journald)
        if args.command in ("create-admin", "add-user"):
            return _create(config, args)
        return serve(config)
    except (ConfigError, KeyFileError) as e:
        print(f"kiosk-console: {e}", file=sys.stderr)
        return ConfigError.exit_status
    except KioskError as e:
        print(f"kiosk-console: {e}", file=sys.stderr)
        return 1


def serve(config) -> int:
    from waitress.server import create_server

    from . import charts
    from .app import create_app
    from .service import open_console

    console = open_console(config)
    notifier = Notifier()
    try:
        cc = config.console
        server = create_server(create_app(console), host=cc.host, port=cc.port, threads=cc.threads,
                               ident="kiosk-console", trusted_proxy=None, clear_untrusted_proxy_headers=True)
        stop = threading.Event()

        def _stop(*_):
            stop.set()
            server.close()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        log.info("console serving on http://%s:%d/ (site %s, store %s)", cc.host, server.effective_port, cc.site,
                 console.store.describe())
        notifier.ready(f"serving on {cc.host}:{server.effective_port}")
        threading.Thread(target=charts.warm_up, name="charts-warm-up", daemon=True).start()
        try:
            server.run()
        except (OSError, ValueError):
            if not stop.is_set():
                raise
    finally:
        notifier.stopping()
        console.close()
        log.info("console stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
