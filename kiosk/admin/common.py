"""Helpers shared by the kiosk-admin commands."""

from __future__ import annotations

from ..config import KioskConfig, config_from_args


def config_of(args) -> KioskConfig:
    """The admin's config: ``--config`` and, where the command has it, ``--state-dir``."""
    return config_from_args(args)
