"""``kiosk-ingest``'s settings: ``/etc/kiosk/ingest.toml``, typed and checked once at start.

A back end is not a kiosk, so it has a file of its own; every key is
documented in ``config/ingest.toml`` (the shipped defaults). Relative paths
are looked up in ``$CREDENTIALS_DIRECTORY`` first (systemd credentials),
then under ``[ingest] state_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from ..config import MqttSettings, Section, parse_model
from ..errors import ConfigError
from ..keyfile import credential_path
from .freshness import FreshnessRules

_NAME = r"^[A-Za-z0-9_.-]+$"


class BrokerSettings(Section):
    # The kiosk's own URL rules (IPv6 in brackets; plain mqtt:// only to this machine): one definition.
    url: str = MqttSettings.model_fields["url"].default
    ca_file: Path = Path("mqtt-ca.pem")
    client_cert: Path = Path("mqtt-client.pem")
    client_key: Path = Path("mqtt-client.key")
    client_id: str = Field("kiosk-ingest-1", min_length=1, max_length=64, pattern=_NAME)
    session_expiry_s: int = Field(604800, ge=0, le=4294967295)
    share_group: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    receive_maximum: int = Field(1000, ge=1, le=65535)
    keepalive: int = Field(30, ge=1, le=3600)
    connect_timeout: float = Field(10.0, gt=0, le=300)
    reconnect_backoff_max: float = Field(30.0, ge=1, le=3600)
    topic_prefix: str = Field("kiosk", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            MqttSettings(url=url)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return url

    def mqtt(self) -> MqttSettings:
        """As the kiosk's MQTT settings, for the shared client plumbing."""
        return MqttSettings(
            enabled=True, url=self.url, ca_file=self.ca_file, client_cert=self.client_cert,
            client_key=self.client_key, keepalive=self.keepalive, connect_timeout=self.connect_timeout,
            reconnect_backoff_initial=1.0, reconnect_backoff_max=self.reconnect_backoff_max,
            topic_prefix=self.topic_prefix,
        )


class IngestKeys(Section):
    backend_key: Path = Path("backend.jwks")
    devices: Path = Path("devices")


class StoreSettings(Section):
    url: str = Field("sqlite:///events.db", min_length=1)
    retention_days: float = Field(400.0, gt=0, le=36500)
    purge_interval_s: float = Field(3600.0, ge=10, le=86400)


class IngestSettings(Section):
    state_dir: Path = Path("/var/lib/kiosk-ingest")
    batch_max: int = Field(500, ge=1, le=10000)
    max_clock_ahead_s: float = Field(300.0, ge=0, le=86400 * 365)
    stale_after_s: float = Field(86400.0, gt=0, le=86400 * 3650)
    reorder_window: int = Field(0, ge=0, le=10**9)
    stall_after_s: float = Field(30.0, ge=1, le=3600)

    def rules(self) -> FreshnessRules:
        return FreshnessRules(max_clock_ahead_s=self.max_clock_ahead_s, stale_after_s=self.stale_after_s,
                              reorder_window=self.reorder_window)


class IngestLogging(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    journald: bool = True


class IngestConfig(Section):
    broker: BrokerSettings = BrokerSettings()
    keys: IngestKeys = IngestKeys()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    logging: IngestLogging = IngestLogging()

    def path(self, p: Path) -> Path:
        """A path from the config: $CREDENTIALS_DIRECTORY first, then under ``[ingest] state_dir``."""
        return state_path(p, self.ingest.state_dir)

    @property
    def store_url(self) -> str:
        """The store's URL, a relative SQLite path taken under ``state_dir``."""
        return store_url_under(self.store.url, self.ingest.state_dir)


def state_path(p: Path, state_dir: Path) -> Path:
    """A path from a service's config: $CREDENTIALS_DIRECTORY first, then under its ``state_dir``."""
    found = credential_path(p)
    return found if found.is_absolute() else state_dir / found


def store_url_under(url: str, state_dir: Path) -> str:
    """A store URL, a relative SQLite path taken under ``state_dir`` (kiosk-ingest's and kiosk-console's)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{state_dir / url[len('sqlite:///'):]}"
    return url


#: The documented defaults shipped with the package sources.
DEFAULT_INGEST_CONFIG = Path(__file__).resolve().parent.parent.parent / "config" / "ingest.toml"


def parse_ingest_config(text: str, path: Path | str = "<string>") -> IngestConfig:
    return parse_model(IngestConfig, text, path)


def load_ingest_config(path: Path | str) -> IngestConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    return parse_ingest_config(text, path)
