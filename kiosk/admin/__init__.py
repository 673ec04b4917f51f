"""``kiosk-admin``: tools for admins and installers.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import run_command, validate
from ..cliopts import add_common_options, config_after_subcommands, default_config
from ..logs import setup_logging

#: What only the device extra brings (the camera stack, QR codes): a server
#: installs kiosk[backend] without it (docs/backend.md), and the commands
#: that need it are left out there, saying so.
DEVICE_STACK = frozenset({"cv2", "numpy", "dlib", "face_recognition_models", "pyzbar", "gpiozero", "segno"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk-admin",
        description="Admin and installer tools for the clock-in kiosk: enrollment, evaluation, keys, events.",
    )
    add_common_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Imported when the parser is built, not with the package: a module that imports
    # one of them (kiosk.admin.report, say) does not pull in the others.
    from . import events, keys, report  # what a back-end server runs

    try:  # what needs the camera stack, which only the device extra brings
        from . import (adaptation, attacks, enroll, evaluate, faces, gallery, invite, liveness, provision, qrtoken,
                       visits)
    except ImportError as e:
        if (e.name or "").split(".")[0] not in DEVICE_STACK:
            raise
        before, after = (), ()
        parser.epilog = ("Not here: the enroll, faces, evaluate, attacks, liveness, provision, qrtoken, invite and "
                         "gallery commands need the camera stack (pip install 'kiosk[device]').")
    else:
        before = (enroll, faces, evaluate, attacks, liveness, visits, adaptation)
        after = (provision, qrtoken, invite, gallery)
    # In the order --help lists them.
    for module in (*before, keys, events, report, *after):
        module.register(sub)
    config_after_subcommands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = default_config(args.config)
    setup_logging("DEBUG" if args.verbose else "WARNING", journald=False)
    if args.validate_config:
        return run_command("kiosk-admin", validate, args)
    if not args.command:  # a sub-command is required unless --validate-config is given
        parser.error("the following arguments are required: COMMAND")
    return run_command("kiosk-admin", args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
