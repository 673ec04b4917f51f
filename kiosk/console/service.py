"""Everything a console process holds, built once from its config and closed in reverse."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..backend.store import Store, open_store
from ..errors import ConfigError, KeyFileError
from ..keyfile import read_secret, write_secret
from ..sync import keys as keymod
from ..sync.mqtt import tls_files
from .accounts import Accounts, Lockout
from .config import ConsoleConfig
from .publishing import GalleryPublisher, site_devices
from .residents import Residents

log = logging.getLogger(__name__)


@dataclass
class Console:
    config: ConsoleConfig
    store: Store
    accounts: Accounts
    residents: Residents
    session_key: bytes
    publisher: GalleryPublisher | None = None
    backend_key: keymod.PartyKeys | None = None
    backend_public: keymod.PartyKeys | None = None
    admin_key: keymod.PartyKeys | None = None
    fleet_key_path: Path | None = None
    _closers: list = field(default_factory=list)

    @property
    def site(self) -> str:
        return self.config.console.site

    @property
    def tz(self) -> tzinfo | None:
        return zone(self.config.console.timezone) if self.config.console.timezone else None

    def devices(self) -> list[str]:
        try:
            return sorted(site_devices(self.config.path(self.config.keys.devices), self.site))
        except KeyFileError:
            return []

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - close the rest whatever one does
                log.exception("closing the console")
        self._closers.clear()


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name!r}: not a known time zone") from None


def session_key(path: Path) -> bytes:
    """The key Flask signs session cookies with: made once (0600), then read; readable by the service alone."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(path, secrets.token_hex(32).encode())
    return read_secret(path).strip()


def open_console(config: ConsoleConfig, *, publish: bool = True, store: Store | None = None) -> Console:
    """Open the store, the enrollment database and the keys; start the publisher when ``publish``."""
    closers = []
    try:
        cc = config.console
        if cc.timezone:
            zone(cc.timezone)
        store = store or open_store(config.store_url)
        closers.append(store.close)
        accounts = Accounts(store, Lockout(cc.login_failures, cc.failure_window_minutes * 60, cc.lockout_minutes * 60))
        config.gallery.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        residents = Residents(config.kiosk_config())
        closers.append(residents.close)
        console = Console(config, store, accounts, residents, session_key(config.path(cc.session_key)))
        keys = config.keys
        if (p := config.optional(keys.backend_key)) is not None:
            console.backend_key = keymod.load_private(p)
            console.backend_public = console.backend_key.public()
        if (p := config.optional(keys.backend_public)) is not None:
            console.backend_public = keymod.load_public_one(p)
        if (p := config.optional(keys.fleet_key)) is not None:
            from ..keyfile import check_private

            check_private(p)
            console.fleet_key_path = p
        admin_path = config.path(keys.admin_key)
        if admin_path.exists() or (publish and config.broker.enabled):  # publishing needs it, reading does not
            console.admin_key = keymod.load_private(admin_path)
        if publish and config.broker.enabled:
            mqtt = config.broker.mqtt()
            pub = GalleryPublisher(
                residents, store, mqtt, tls_files(mqtt, cc.state_dir), site=cc.site, admin_key=console.admin_key,
                devices_path=config.path(keys.devices), client_id=config.broker.client_id,
                valid_hours=config.gallery.valid_hours, max_message_bytes=config.gallery.max_message_bytes,
                interval_s=config.gallery.publish_interval_s)
            console.publisher = pub.start()
            closers.append(pub.close)
        console._closers = closers
        return console
    except BaseException:
        for close in reversed(closers):
            close()
        raise
