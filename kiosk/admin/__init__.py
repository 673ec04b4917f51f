"""``kiosk-admin``: tools for admins and installers.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import run_command
from ..logs import setup_logging

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk-admin",
        description="Admin and installer tools for the clock-in kiosk: enrollment, evaluation, keys, events.",
    )
    parser.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Imported when the parser is built, not with the package: a module that imports
    # one of them (kiosk.admin.report, say) does not pull in the others.
    from . import attacks, enroll, evaluate, events, faces, gallery, keys, liveness, provision, qrtoken, report

    # In the order --help lists them.
    for module in (enroll, faces, evaluate, attacks, liveness, keys, events, report, provision, qrtoken, gallery):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "WARNING", journald=False)
    return run_command("kiosk-admin", args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
