"""``kiosk-console``'s settings: ``/etc/kiosk/console.toml``, typed and checked once at start.

Every key is documented in ``config/console.toml`` (the shipped defaults).
Relative key paths are looked up in ``$CREDENTIALS_DIRECTORY`` first
(systemd credentials), then under ``[console] state_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..backend.config import BrokerSettings, state_path, store_url_under
from ..config import KioskConfig, Section, parse_model
from ..errors import ConfigError

_NAME = r"^[A-Za-z0-9_.-]+$"


class ConsoleSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    state_dir: Path = Path("/var/lib/kiosk-console")
    site: str = Field("site", min_length=1, max_length=64, pattern=_NAME)
    timezone: str = ""
    session_key: Path = Path("console-session.key")
    idle_minutes: float = Field(30.0, gt=0, le=24 * 60)
    session_hours: float = Field(12.0, gt=0, le=24 * 7)
    login_failures: int = Field(5, ge=1, le=100)
    failure_window_minutes: float = Field(15.0, gt=0, le=24 * 60)
    lockout_minutes: float = Field(15.0, gt=0, le=7 * 24 * 60)
    behind_proxy: bool = False
    threads: int = Field(8, ge=1, le=64)
    offline_after_s: float = Field(300.0, gt=0, le=86400)
    max_upload_mb: float = Field(20.0, gt=0, le=200)


class ConsoleStore(Section):
    url: str = Field("sqlite:///events.db", min_length=1)


class ConsoleGallery(Section):
    state_dir: Path = Path("/var/lib/kiosk-console/gallery")
    valid_hours: float = Field(168.0, gt=0, le=24 * 365)
    max_message_bytes: int = Field(262144, ge=4096, le=268435456)
    publish_interval_s: float = Field(30.0, ge=1, le=3600)


class ConsoleKeys(Section):
    admin_key: Path = Path("admin.jwks")
    devices: Path = Path("devices")
    backend_key: str = ""
    backend_public: str = ""
    fleet_key: str = ""
    door_broker_url: str = ""


class ConsoleBroker(BrokerSettings):
    enabled: bool = True
    client_id: str = Field("kiosk-console", min_length=1, max_length=64, pattern=_NAME)


class ConsoleLogging(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    journald: bool = True


class ConsoleConfig(Section):
    console: ConsoleSettings = ConsoleSettings()
    store: ConsoleStore = ConsoleStore()
    gallery: ConsoleGallery = ConsoleGallery()
    keys: ConsoleKeys = ConsoleKeys()
    broker: ConsoleBroker = ConsoleBroker()
    logging: ConsoleLogging = ConsoleLogging()

    def path(self, p: Path) -> Path:
        """A path from the config: $CREDENTIALS_DIRECTORY first, then under ``[console] state_dir``."""
        return state_path(p, self.console.state_dir)

    @property
    def store_url(self) -> str:
        return store_url_under(self.store.url, self.console.state_dir)

    def kiosk_config(self) -> KioskConfig:
        """The admin's enrollment database as kiosk-admin sees it (its state folder, the site)."""
        return KioskConfig.model_validate({"device": {"site": self.console.site,
                                                      "state_dir": str(self.gallery.state_dir)}})

    def optional(self, p: str) -> Path | None:
        """A key path that may be left empty ("": none)."""
        return self.path(Path(p)) if p else None


DEFAULT_PATH = Path("/etc/kiosk/console.toml")
CONFIG_ENV = "KIOSK_CONSOLE_CONFIG"


def parse_console_config(text: str, path: Path | str = "<string>") -> ConsoleConfig:
    return parse_model(ConsoleConfig, text, path)


def load_console_config(path: Path | str) -> ConsoleConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    return parse_console_config(text, path)
