"""Which kiosk a provisioning code is for, and the identity it takes.

A fleet code is a bearer token: anyone who holds one (a photo of the
printout) can show it to a camera. So a kiosk takes a code only when the
code is bound to it:

- by **hardware**: the code names this kiosk's hardware id (``hw``;
  ``kiosk-admin provision-qr --hardware ID``): one code, one kiosk;
- by **configuration**: this kiosk's config names its site and device id
  (``[device] site`` and ``device_id``, not the placeholders) and the code is
  for exactly that site and device.

The daemon waiting at its camera takes only bound codes. An installer at a
shell (``kiosk provision``) may also take a code bound to neither, and is
shown what it took. Either way a code never silently overrides a device id
the config names, and a code that names no device needs one in the config.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import DeviceSettings, KioskConfig
from .bundle import Bundle, refused

log = logging.getLogger(__name__)

#: The config's values for "not set": the shipped kiosk.toml carries them.
PLACEHOLDER_SITE = DeviceSettings.model_fields["site"].default
PLACEHOLDER_DEVICE = DeviceSettings.model_fields["device_id"].default

#: Where a hardware id is read when the config names none: the board's serial number, else systemd's machine id.
HARDWARE_ID_FILES = (Path("/sys/firmware/devicetree/base/serial-number"), Path("/etc/machine-id"))


def hardware_id(config: KioskConfig, files=HARDWARE_ID_FILES) -> str | None:
    """This kiosk's hardware id: ``provisioning.hardware_id``, else the first readable of ``files``."""
    if config.provisioning.hardware_id:
        return config.provisioning.hardware_id.lower()
    for path in files:
        try:
            text = path.read_bytes().replace(b"\x00", b"").decode("ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if text and len(text) <= 64 and all(c.isalnum() or c in "_.:-" for c in text):
            return text
    return None


def configured_identity(config: KioskConfig) -> tuple[str | None, str | None]:
    """(site, device id) as the config names them; None where it holds the placeholder."""
    d = config.device
    return (None if d.site == PLACEHOLDER_SITE else d.site,
            None if d.device_id == PLACEHOLDER_DEVICE else d.device_id)


def bound_device(bundle: Bundle, config: KioskConfig, *, attended: bool) -> str:
    """The device id this kiosk takes with ``bundle``; :class:`ProvisioningRefused` when not for this kiosk.

    :param attended: an installer took the code at a shell (``kiosk
        provision``), not the daemon alone at its camera.
    """
    site, device = configured_identity(config)
    if site is not None and bundle.site != site:
        raise refused("wrong_identity", f"the code is for site {bundle.site}; this kiosk's config names {site}")
    if bundle.device_id and device is not None and bundle.device_id != device:
        raise refused("wrong_identity", f"the code is for {bundle.device_id}; this kiosk's config names {device}")
    device_id = bundle.device_id or device
    if device_id is None:
        raise refused("no_device", "make a code with --device, or set device_id in this kiosk's config")
    mine = hardware_id(config)
    if bundle.hardware_id is not None:
        if bundle.hardware_id.lower() != mine:
            raise refused("other_kiosk", f"the code names hardware id {bundle.hardware_id}; this kiosk is {mine}")
    elif not attended and (site, device) != (bundle.site, device_id):
        raise refused("not_bound", f"this kiosk's hardware id is {mine}" if mine else "")
    if device is None:
        log.warning("device id %s comes from the provisioning code (this kiosk's config names none)", device_id)
    return device_id
