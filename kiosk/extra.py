"""The ``admin`` extra: tqdm and matplotlib, which only the offline admin tools need.

A kiosk installs without them (``pip install kiosk``); an admin's machine
installs ``kiosk[admin]``. A command that needs one checks before it starts
working, and says how to get it.
"""

from __future__ import annotations

import importlib

from .errors import MissingExtra

INSTALL_HINT = "pip install 'kiosk[admin]' (or /opt/kiosk/venv/bin/pip install tqdm matplotlib)"


def need(command: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` naming the command and the missing modules, if any is not installed."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtra(
            f"{command} needs {' and '.join(missing)}, from the 'admin' extra, which is not installed: {INSTALL_HINT}"
        )


def tqdm(*args, **kwargs):
    """A tqdm progress bar; :class:`MissingExtra` if tqdm is not installed."""
    need("this command", "tqdm")
    from tqdm import tqdm as bar

    return bar(*args, **kwargs)
