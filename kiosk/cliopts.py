"""What the three command lines share: ``--version``, ``--config`` and where it defaults to.

The rule, the same for ``kiosk``, ``kiosk-admin`` and ``kiosk-ingest``:
``--config FILE`` goes before the sub-command (``kiosk --config F run``);
after it is accepted too, as before (``kiosk run --config F``). Without it,
the config is ``$KIOSK_CONFIG`` if set, else ``/etc/kiosk/kiosk.toml`` where
it exists, else the built-in defaults (``kiosk-ingest``: ``$KIOSK_INGEST_CONFIG``,
else ``/etc/kiosk/ingest.toml``, which it needs). ``--validate-config`` checks
that file, prints ``FILE: OK`` and exits 0, or 78 with what is wrong.
"""

from __future__ import annotations

import argparse
import os
from importlib import metadata
from pathlib import Path

KIOSK_CONFIG_ENV = "KIOSK_CONFIG"
KIOSK_CONFIG_PATH = Path("/etc/kiosk/kiosk.toml")
INGEST_CONFIG_ENV = "KIOSK_INGEST_CONFIG"
INGEST_CONFIG_PATH = Path("/etc/kiosk/ingest.toml")

CONFIG_HELP = (f"kiosk config file (default: ${KIOSK_CONFIG_ENV}, else {KIOSK_CONFIG_PATH} where it exists, "
               "else the built-in defaults)")
VALIDATE_HELP = "check the config file (--config's, or FILE), print FILE: OK and exit 0, or what is wrong and exit 78"


def package_version() -> str:
    try:
        return metadata.version("kiosk")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_common_options(parser: argparse.ArgumentParser, config_help: str = CONFIG_HELP) -> None:
    """``--version``, ``--config FILE`` and ``--validate-config [FILE]`` on a command's top-level parser."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--config", metavar="FILE", help=config_help)
    # FILE is the spelling kiosk had before --config was its rule; both stay.
    parser.add_argument("--validate-config", nargs="?", const=True, default=None, metavar="FILE", help=VALIDATE_HELP)


def config_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config FILE`` after every (nested) sub-command too, without hiding one given before it.

    A sub-parser's defaults overwrite the top level's values, so its
    ``--config`` is given no default at all (``SUPPRESS``).
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in set(action.choices.values()):
            own = [a for a in sub._actions if "--config" in a.option_strings]
            if own:
                own[0].default = argparse.SUPPRESS
                own[0].help = CONFIG_HELP
            else:
                sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
            config_after_subcommands(sub)


def default_config(given: str | None, *, env: str = KIOSK_CONFIG_ENV, system: Path = KIOSK_CONFIG_PATH,
                   environ=os.environ) -> str | None:
    """The config file a command reads: ``--config``, else ``$env``, else ``system`` where it exists, else None."""
    if given:
        return given
    if environ.get(env):
        return environ[env]
    if system.exists():
        return str(system)
    return None


def validate_target(args) -> str | None:
    """The file ``--validate-config`` checks: its own FILE, else the one ``--config`` resolved to."""
    return args.validate_config if isinstance(args.validate_config, str) else args.config
