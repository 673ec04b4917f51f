"""Helpers shared by the kiosk-admin commands."""

from __future__ import annotations

from ..config import KioskConfig, load_config


def config_of(args) -> KioskConfig:
    cfg = load_config(args.config)
    if getattr(args, "state_dir", None):
        cfg = cfg.model_copy(update={"device": cfg.device.model_copy(update={"state_dir": args.state_dir})})
    return cfg
