"""``kiosk``: the device's command line (the daemon, provisioning, self-test)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import load_config
from .errors import ConfigError, KioskError

#: Modules (under kiosk/) that provide sub-commands through ``register(subparsers)``.
COMMAND_MODULES = [
    "daemon",
    "selftest",
    "preview",
    "door",
    "provisioning.command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk",
        description="Edge clock-in kiosk: matches faces locally and publishes signed, encrypted check-ins.",
    )
    parser.add_argument(
        "--validate-config", metavar="FILE", help="check a config file, print what is wrong, exit 0 or 78"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"kiosk.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.validate_config:
            load_config(args.validate_config)
            print(f"{args.validate_config}: OK")
            return 0
        if not args.command:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"kiosk: {e}", file=sys.stderr)
        return ConfigError.exit_status
    except KioskError as e:
        print(f"kiosk: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
