"""``kiosk-admin``: tools for admins and installers.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..cli import run_command
from ..logs import setup_logging

#: Modules that provide sub-commands, in the order --help lists them.
COMMAND_MODULES = [
    "enroll",
    "faces",
    "evaluate",
    "attacks",
    "liveness",
    "keys",
    "events",
    "report",
    "provision",
    "qrtoken",
    "gallery",
]


#: What only the device extra brings (the camera stack, QR codes): a server
#: installs kiosk[backend] without it (docs/backend.md), and the commands
#: that need it are left out there, saying so.
DEVICE_STACK = frozenset({"cv2", "numpy", "dlib", "face_recognition_models", "pyzbar", "gpiozero", "segno"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk-admin",
        description="Admin and installer tools for the clock-in kiosk: enrollment, evaluation, keys, events.",
    )
    parser.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    without = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as e:
            if (e.name or "").split(".")[0] not in DEVICE_STACK:
                raise
            without.append(name)
            continue
        module.register(sub)
    if without:
        parser.epilog = (f"Not here: the {', '.join(without)} commands need the camera stack "
                         "(pip install 'kiosk[device]').")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "WARNING", journald=False)
    return run_command("kiosk-admin", args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
