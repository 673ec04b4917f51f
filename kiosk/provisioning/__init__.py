"""Provisioning: binding a kiosk to its site with a QR code signed by the fleet root key.

- :mod:`.trust`: the fleet root key (made by ``kiosk-admin fleet-key``);
- :mod:`.bundle`: what a code says, signing and verifying it, signed resets;
- :mod:`.store`: taking a code on the device, keeping it, applying it to the config;
- :mod:`.scan`: finding codes in camera frames;
- :mod:`.command`: ``kiosk provision``.
"""

from .bundle import Bundle, make_bundle, read_bundle, read_reset, sign_bundle, sign_reset
from .scan import CodeScanner, scan
from .store import ProvisioningStore
from .trust import RootKeys, generate_root

__all__ = [
    "Bundle",
    "CodeScanner",
    "ProvisioningStore",
    "RootKeys",
    "generate_root",
    "make_bundle",
    "read_bundle",
    "read_reset",
    "scan",
    "sign_bundle",
    "sign_reset",
]
