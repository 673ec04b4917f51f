"""``kiosk``: the device's command line (the daemon, provisioning, self-test)."""

from __future__ import annotations

import argparse
import sys

from .cliopts import add_common_options, config_after_subcommands, default_config, validate_target
from .config import load_config
from .errors import ConfigError, KioskError

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk",
        description="Edge clock-in kiosk: matches faces locally and publishes signed, encrypted check-ins.",
    )
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each provides its sub-command through register(subparsers). Imported here, not at the top:
    # kiosk-admin imports run_command from this module and needs none of them.
    from . import daemon, door, preview, selftest
    from .bench import command as bench
    from .provisioning import command as provisioning

    for module in (daemon, selftest, preview, door, provisioning, bench):
        module.register(sub)
    config_after_subcommands(parser)
    return parser


def run_command(prog: str, fn, args) -> int:
    """Run a sub-command; a kiosk error becomes a message and an exit status (78 for config)."""
    try:
        return int(fn(args) or 0)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return ConfigError.exit_status
    except KioskError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = default_config(args.config)
    if args.validate_config:
        return run_command("kiosk", validate, args)
    if not args.command:
        parser.print_help()
        return 2
    return run_command("kiosk", args.func, args)


def validate(args) -> int:
    """``--validate-config``: the kiosk config and this door's key file, checked (kiosk and kiosk-admin)."""
    from .sync.keys import check_device_key_owner

    path = validate_target(args)
    cfg = load_config(path)
    check_device_key_owner(cfg)  # the key file, when there is one, is this door's
    print(f"{path or 'the built-in defaults'}: OK")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
