"""Provisioning as the daemon meets it at start: apply what is stored, or wait for a code."""

from __future__ import annotations

import logging
import threading
import time

from ..config import KioskConfig
from ..errors import ProvisioningRefused
from .bundle import Bundle
from .scan import CodeScanner, scan
from .store import ProvisioningStore

log = logging.getLogger(__name__)

WAITING = "unprovisioned: show the provisioning QR code to the camera"


def provisioned_config(config: KioskConfig) -> tuple[KioskConfig, ProvisioningStore | None, Bundle | None]:
    """The config with the stored provisioning applied.

    Returns ``(config, None, None)`` when provisioning does not apply (off,
    or no fleet root key in the image), ``(config, store, None)`` when the
    device waits for a code, and ``(applied, store, bundle)`` when it is
    provisioned. A stored provisioning that does not verify raises
    :class:`~kiosk.errors.NotProvisioned`.
    """
    store = ProvisioningStore(config)
    if not store.enabled:
        if config.provisioning.enabled:
            log.info("no fleet root key at %s: site and keys come from the config", store.root_key_path)
        return config, None, None
    bundle = store.load()
    if bundle is None:
        return config, store, None
    applied = store.apply(config, bundle)
    store.check_ca(applied, bundle)
    log.info("provisioned for site %s (%s), service location within %.0f m", bundle.site, bundle.name, bundle.radius_m)
    return applied, store, bundle


def wait_for_code(store: ProvisioningStore, get_frame, *, stop: threading.Event, notifier=None, panel=None,
                  timeout: float | None = None) -> Bundle | None:
    """Read frames until a good provisioning code is taken (None: stopped, or the frames ended).

    Keeps systemd's watchdog fed; a refused code is logged with its reason
    and flashes the panel's red light until the next code.
    """
    from .binding import hardware_id

    hw = hardware_id(store.config)
    waiting = WAITING + (f" (a code for this kiosk: hardware id {hw})" if hw else "")
    log.warning(waiting)
    if notifier is not None:
        notifier.ready(waiting)  # ready to be provisioned; systemd must not time the start-up out
    last_ping = [0.0]

    def tick() -> None:
        interval = getattr(notifier, "watchdog_interval", None)
        now = time.monotonic()
        if interval and now - last_ping[0] >= interval / 3:
            notifier.watchdog()
            last_ping[0] = now

    def refused(e: ProvisioningRefused) -> None:
        if notifier is not None:
            notifier.status(f"provisioning code refused: {e}")
        if panel is not None:
            try:
                panel.error()
            except Exception:
                log.exception("door panel failed")

    scanner = CodeScanner(store.install, every=store.settings.scan_every, on_refused=refused)
    bundle = scan(get_frame, scanner, stop=stop, timeout=timeout, tick=tick)
    if bundle is not None and panel is not None:
        try:
            panel.clear()
        except Exception:
            log.exception("door panel failed")
    return bundle
