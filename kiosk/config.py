"""Typed settings, read once from TOML and checked at start-up.

Each table of ``config/kiosk.toml`` is one model below. An unknown key, a
wrong type or a value out of range is a :class:`~kiosk.errors.ConfigError`
that names the file, the line and the dotted key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

#: The documented default config, shipped inside the package (a link to
#: config/kiosk.toml in the source tree, a copy in the wheel).
DEFAULT_CONFIG_PATH = Path(__file__).parent / "defaults" / "kiosk.toml"


class Section(BaseModel):
    """Base of every config table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DeviceSettings(Section):
    site: str = Field("unprovisioned", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    device_id: str = Field("kiosk", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    state_dir: Path = Path("/var/lib/kiosk")


class CaptureSettings(Section):
    source: str = "picamera2:0"
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=48, le=4096)
    fps: float = Field(15.0, gt=0, le=120)
    queue_size: int = Field(2, ge=1, le=64)
    pace_files: bool = False
    reopen_backoff_initial: float = Field(0.5, gt=0, le=60)
    reopen_backoff_max: float = Field(30.0, gt=0, le=3600)
    stall_timeout: float = Field(5.0, gt=0, le=600)

    @model_validator(mode="after")
    def _backoff_order(self):
        if self.reopen_backoff_max < self.reopen_backoff_initial:
            raise ValueError("reopen_backoff_max must be >= reopen_backoff_initial")
        return self


class DetectSettings(Section):
    scale: float = Field(0.5, gt=0.05, le=2.0)
    upsample: int = Field(0, ge=0, le=2)
    far_scale: float = Field(1.0, ge=0, le=2.0)
    far_every: int = Field(3, ge=1, le=100)
    landmarks: Literal[5, 68] = 5
    min_face_px: int = Field(80, ge=20, le=2000)
    min_sharpness: float = Field(25.0, ge=0)
    edge_margin: float = Field(0.02, ge=0, le=0.25)
    jitter: int = Field(0, ge=0, le=100)
    # Guided capture's gates (kiosk.match.gates).
    max_yaw: float = Field(30.0, gt=0, le=90)
    max_pitch: float = Field(25.0, gt=0, le=90)
    min_brightness: float = Field(40.0, ge=0, le=255)


class GuideSettings(Section):
    enabled: bool = True
    after_s: float = Field(0.4, ge=0, le=10)
    every_s: float = Field(1.5, ge=0, le=60)


class TrackSettings(Section):
    iou_min: float = Field(0.25, gt=0, lt=1)
    max_gap_s: float = Field(1.0, gt=0, le=60)
    embed_every: int = Field(3, ge=1, le=100)
    min_frames: int = Field(3, ge=1, le=100)


class MatchSettings(Section):
    threshold: float = Field(0.45, gt=0, le=2.0)
    margin: float = Field(0.06, ge=0, le=2.0)
    votes_k: int = Field(3, ge=1, le=50)
    votes_m: int = Field(5, ge=1, le=50)
    max_votes: int = Field(15, ge=1, le=200)
    visit_threshold: float = Field(0.42, ge=0, le=2.0)
    repeat_interval_s: float = Field(30.0, ge=0, le=86400)
    fpir_target: float = Field(0.001, ge=0, le=0.5)
    fnir_limit: float = Field(0.3, gt=0, le=1.0)
    second_factor: Literal["off", "auto", "always"] = "off"
    second_factor_window_s: float = Field(3.0, gt=0, le=5)
    mean_template: bool = True

    @model_validator(mode="after")
    def _k_of_m(self):
        if self.votes_k > self.votes_m:
            raise ValueError("votes_k must be <= votes_m")
        if self.max_votes < self.votes_m:
            raise ValueError("max_votes must be >= votes_m")
        return self


class StorageSettings(Section):
    database: Path = Path("kiosk.db")
    template_key: Path = Path("template.key")


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    journald: bool = True


#: A gpiozero pin name ("GPIO17", "BOARD11", "17"), or "" for none.
_PIN = r"^(|GPIO\d{1,2}|BCM\d{1,2}|BOARD\d{1,2}|WPI\d{1,2}|J8:\d{1,2}|\d{1,2})$"


class GpioSettings(Section):
    enabled: bool = False
    relay_pin: str = Field("GPIO17", pattern=_PIN)
    relay_active_low: bool = True
    relay_pulse_s: float = Field(3.0, gt=0, le=30)
    green_led_pin: str = Field("GPIO27", pattern=_PIN)
    red_led_pin: str = Field("GPIO22", pattern=_PIN)
    buzzer_pin: str = Field("", pattern=_PIN)
    buzzer_active_low: bool = False
    pir_pin: str = Field("", pattern=_PIN)
    exit_button_pin: str = Field("", pattern=_PIN)

    @model_validator(mode="after")
    def _distinct_pins(self):
        if not self.relay_pin:
            raise ValueError("relay_pin is required")
        seen: dict[str, str] = {}
        for key in ("relay_pin", "green_led_pin", "red_led_pin", "buzzer_pin", "pir_pin", "exit_button_pin"):
            pin = getattr(self, key)
            if not pin:
                continue
            norm = pin.removeprefix("GPIO").removeprefix("BCM")
            if norm in seen:
                raise ValueError(f"{key} and {seen[norm]} are both {pin}")
            seen[norm] = key
        return self


class MotionSettings(Section):
    enabled: bool = True
    width: int = Field(64, ge=16, le=640)
    height: int = Field(48, ge=12, le=480)
    pixel_threshold: int = Field(15, ge=1, le=255)
    area_threshold: float = Field(0.01, gt=0, le=1)
    background_rate: float = Field(0.05, gt=0, le=1)
    hold_s: float = Field(3.0, ge=0, le=600)


class MqttSettings(Section):
    enabled: bool = False
    # HOST is a name, an IPv4 address or a bracketed IPv6 address ([fd00::1]).
    url: str = Field("mqtts://localhost:8883", pattern=r"^mqtts?://([^/:\s\[\]]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?/?$")
    ca_file: Path = Path("mqtt-ca.pem")
    client_cert: Path = Path("mqtt-client.pem")
    client_key: Path = Path("mqtt-client.key")
    keepalive: int = Field(30, ge=1, le=3600)
    connect_timeout: float = Field(10.0, gt=0, le=300)
    inflight: int = Field(20, ge=1, le=1000)
    reconnect_backoff_initial: float = Field(1.0, gt=0, le=600)
    reconnect_backoff_max: float = Field(60.0, gt=0, le=3600)
    topic_prefix: str = Field("kiosk", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    status_interval: float = Field(60.0, ge=1, le=86400)
    require_subscriber: bool = True
    stop_grace_s: float = Field(3.0, ge=0, le=60)

    @field_validator("url")
    @classmethod
    def _ipv6(cls, url: str) -> str:
        netloc = url.split("://", 1)[1]
        if netloc.startswith("[") and getattr(_ip(netloc[1:].partition("]")[0]), "version", 0) != 6:
            raise ValueError(f"{netloc.partition(']')[0]}] is not an IPv6 address")
        return url

    @model_validator(mode="after")
    def _checks(self):
        if self.reconnect_backoff_max < self.reconnect_backoff_initial:
            raise ValueError("reconnect_backoff_max must be >= reconnect_backoff_initial")
        if self.scheme == "mqtt" and not _on_this_device(self.host):
            raise ValueError("plain mqtt:// is only allowed to a broker on this device (a local bridge); use mqtts://")
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1..65535")
        return self

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def host(self) -> str:
        """The broker's name or address, as a socket takes it (an IPv6 address without brackets)."""
        netloc = self.url.split("://", 1)[1].rstrip("/")
        if netloc.startswith("["):
            return netloc[1:].partition("]")[0]
        return netloc.partition(":")[0]

    @property
    def port(self) -> int:
        netloc = self.url.split("://", 1)[1].rstrip("/")
        port = netloc.rpartition("]")[2].partition(":")[2]
        return int(port) if port else (8883 if self.tls else 1883)

    @property
    def address(self) -> str:
        """HOST:PORT for messages, with an IPv6 address in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _on_this_device(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


class OutboxSettings(Section):
    retention_days: float = Field(7.0, ge=0, le=3650)
    disk_budget_mb: float = Field(64.0, ge=0.05, le=1_000_000)
    when_full: Literal["drop_oldest", "refuse", "alarm_only"] = "drop_oldest"
    evidence_crop: bool = False


class LivenessSettings(Section):
    enabled: bool = True
    min_frames: int = Field(8, ge=2, le=120)
    max_wait_s: float = Field(3.0, gt=0, le=60)
    blink_drop: float = Field(0.26, gt=0, lt=1)
    blink_steady: float = Field(0.15, gt=0, le=10)
    min_motion: float = Field(0.1, gt=0, le=5)
    min_moves: int = Field(3, ge=1, le=100)
    full_moves: int = Field(5, ge=1, le=100)
    follow_min: float = Field(0.75, gt=0, le=1)
    static_max: float = Field(0.45, ge=0, lt=1)
    outline_drop: float = Field(0.4, gt=0, le=1)
    moire_threshold: float = Field(3.4, ge=0, le=100)
    moire_ramp: float = Field(0.3, gt=0, le=100)
    blink_weight: float = Field(1.0, ge=0, le=10)
    parallax_weight: float = Field(1.0, ge=0, le=10)
    moire_weight: float = Field(2.0, ge=0, le=10)
    appearance: bool = True
    appearance_offset: float = Field(-1.0, ge=-100, le=100)
    appearance_scale: float = Field(1.0, gt=0, le=100)
    appearance_weight: float = Field(3.0, ge=0, le=10)
    appearance_live_weight: float = Field(0.0, ge=0, le=10)
    live_score: float = Field(0.5, gt=0, le=10)
    spoof_score: float = Field(0.5, gt=0, le=10)
    active_check: bool = True
    active_after_s: float = Field(1.5, ge=0, le=60)
    active_turns: int = Field(2, ge=1, le=5)
    active_window_s: float = Field(3.0, gt=0, le=30)
    active_turn_deg: float = Field(15.0, gt=0, le=60)

    @model_validator(mode="after")
    def _ramp_order(self):
        if self.follow_min <= self.static_max:
            raise ValueError("follow_min must be > static_max")
        if self.full_moves < self.min_moves:
            raise ValueError("full_moves must be >= min_moves")
        if self.appearance_live_weight >= self.live_score:
            # The appearance model's "live" alone must never open the door (docs/liveness.md).
            raise ValueError("appearance_live_weight must be < live_score")
        return self


class KeysSettings(Section):
    device_key: Path = Path("device.jwks")
    backend_public_key: Path = Path("backend.pub.jwks")
    admin_public_key: Path = Path("admin.pub.jwks")


class ProvisioningSettings(Section):
    enabled: bool = True
    fleet_root_key: Path = Path("/etc/kiosk/fleet-root.pub")
    directory: Path = Path("provisioning")
    scan_every: int = Field(5, ge=1, le=100)
    clock_skew_s: float = Field(300.0, ge=0, le=86400)
    hardware_id: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")


#: What a check-in gets in a location state: accepted, accepted and flagged, or refused.
_POLICY = Literal["accept", "flag", "refuse"]


class LocationSettings(Section):
    provider: Literal["none", "fixed", "gpsd", "wifi"] = "fixed"
    latitude: float = Field(0.0, ge=-90, le=90)
    longitude: float = Field(0.0, ge=-180, le=180)
    radius_m: float = Field(150.0, gt=0, le=100_000)
    gpsd_host: str = Field("127.0.0.1", min_length=1)
    gpsd_port: int = Field(2947, ge=1, le=65535)
    stale_after_s: float = Field(30.0, gt=0, le=86400)
    max_accuracy_m: float = Field(200.0, gt=0, le=100_000)
    hysteresis_m: float = Field(25.0, ge=0, le=10_000)
    confirm_fixes: int = Field(3, ge=1, le=100)
    when_unverified: _POLICY = "flag"
    when_out_of_range: _POLICY = "refuse"
    wifi_interface: str = Field("wlan0", pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    wifi_fingerprint: Path = Path("wifi-fingerprint.json")
    wifi_min_similarity: float = Field(0.5, gt=0, le=1)
    wifi_accuracy_m: float = Field(50.0, ge=0, le=10_000)
    wifi_scan_interval_s: float = Field(60.0, ge=5, le=3600)


class QrCredentialSettings(Section):
    enabled: bool = True
    every_n_frames: int = Field(5, ge=1, le=100)
    max_lifetime_s: float = Field(300.0, gt=0, le=3600)
    clock_skew_s: float = Field(30.0, ge=0, le=600)
    repeat_window_s: float = Field(10.0, ge=0, le=600)
    forged_per_minute: int = Field(6, ge=1, le=600)


class EnrollmentSettings(Section):
    enabled: bool = True
    every_n_frames: int = Field(5, ge=1, le=100)
    max_lifetime_s: float = Field(86400.0, gt=0, le=30 * 86400)
    clock_skew_s: float = Field(60.0, ge=0, le=3600)
    descriptors: int = Field(4, ge=1, le=8)
    collect_s: float = Field(2.0, ge=0, le=60)
    timeout_s: float = Field(30.0, gt=0, le=600)


class DoorTemplateSettings(Section):
    enabled: bool = True
    sure_margin: float = Field(0.06, ge=0.0, le=0.5)
    min_interval_h: float = Field(24.0, ge=0.0, le=24 * 365)


class GallerySettings(Section):
    enabled: bool = True
    max_message_bytes: int = Field(262_144, ge=4096, le=268_435_455)
    max_update_bytes: int = Field(67_108_864, ge=4096, le=1_073_741_824)
    part_timeout_s: float = Field(120.0, gt=0, le=86400)
    clock_skew_s: float = Field(300.0, ge=0, le=86400)
    max_templates_per_resident: int = Field(20, ge=1, le=1000)

    @model_validator(mode="after")
    def _sizes(self):
        if self.max_update_bytes < self.max_message_bytes:
            raise ValueError("max_update_bytes must be >= max_message_bytes")
        return self


class ScreenSettings(Section):
    enabled: bool = False
    # Before bind, so that bind's check can read it.
    open_to_network: bool = False
    bind: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)

    @field_validator("bind")
    @classmethod
    def _loopback_unless_opened(cls, bind: str, info) -> str:
        ip = _ip(bind)
        if ip is None:
            raise ValueError("must be an IP address (127.0.0.1, ::1, or this device's own address)")
        if not ip.is_loopback and not info.data.get("open_to_network", False):
            raise ValueError(f"{bind} is not loopback: the page shows the camera and who is let in; "
                             "set open_to_network = true to open it on purpose")
        return bind


#: "HH:MM-HH:MM" (local time; across midnight when the end is earlier), or "" for none.
_QUIET = r"^(|([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d)$"


class VoiceSettings(Section):
    enabled: bool = False
    folder: Path = Path("/opt/kiosk/voice")
    language: str = Field("en", pattern=r"^[A-Za-z0-9_+-]{1,32}$")
    player: str = Field("aplay", min_length=1)
    alsa_device: str = Field("", pattern=r"^[A-Za-z0-9_:,.=-]*$")
    quiet_hours: str = Field("", pattern=_QUIET)

    @model_validator(mode="after")
    def _some_hours(self):
        start, _, end = self.quiet_hours.partition("-")
        if start and start == end:
            raise ValueError("quiet_hours starts and ends at the same time: give an interval, or \"\" for none")
        return self


class KioskConfig(Section):
    device: DeviceSettings = DeviceSettings()
    capture: CaptureSettings = CaptureSettings()
    detect: DetectSettings = DetectSettings()
    guide: GuideSettings = GuideSettings()
    track: TrackSettings = TrackSettings()
    match: MatchSettings = MatchSettings()
    storage: StorageSettings = StorageSettings()
    logging: LoggingSettings = LoggingSettings()
    gpio: GpioSettings = GpioSettings()
    motion: MotionSettings = MotionSettings()
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSettings = OutboxSettings()
    keys: KeysSettings = KeysSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    location: LocationSettings = LocationSettings()
    qr_credential: QrCredentialSettings = QrCredentialSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()
    door_templates: DoorTemplateSettings = DoorTemplateSettings()
    liveness: LivenessSettings = LivenessSettings()
    gallery: GallerySettings = GallerySettings()
    screen: ScreenSettings = ScreenSettings()
    voice: VoiceSettings = VoiceSettings()

    source_path: Path | None = Field(None, exclude=True)

    def state_path(self, p: Path) -> Path:
        """A path from the config, relative ones taken under ``device.state_dir``."""
        p = Path(os.path.expanduser(str(p)))
        return p if p.is_absolute() else self.device.state_dir / p

    @property
    def database_path(self) -> Path:
        return self.state_path(self.storage.database)

    def with_overrides(self, *, state_dir: Path | str | None = None, source: str | None = None) -> "KioskConfig":
        """This config with a command line's ``--state-dir`` and ``--source`` applied."""
        cfg = self
        if state_dir:
            cfg = cfg.model_copy(update={"device": cfg.device.model_copy(update={"state_dir": Path(state_dir)})})
        if source:
            cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"source": source})})
        return cfg


def config_from_args(args) -> KioskConfig:
    """The config a command's ``--config``, ``--state-dir`` and ``--source`` options name."""
    return load_config(args.config).with_overrides(
        state_dir=getattr(args, "state_dir", None), source=getattr(args, "source", None)
    )


def _line_of(text: str, loc: tuple) -> int | None:
    """Best-effort line number of a dotted key in TOML text."""
    keys = [str(k) for k in loc if not isinstance(k, int)]
    if not keys:
        return None
    table, leaf = keys[:-1], keys[-1]
    lines = text.splitlines()
    current: list[str] = []
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
    key_re = re.compile(r"^\s*(?:\"([^\"]+)\"|([A-Za-z0-9_-]+))\s*=")
    for no, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = [p.strip().strip('"') for p in m.group(1).split(".")]
            if current == keys:  # a whole table is the culprit
                return no
            continue
        m = key_re.match(line)
        if m and current == table and (m.group(1) or m.group(2)) == leaf:
            return no
    # A table header alone (e.g. an unknown table).
    for no, line in enumerate(lines, 1):
        m = header.match(line)
        if m and [p.strip() for p in m.group(1).split(".")] == keys[:1]:
            return no
    return None


def parse_config(text: str, path: Path | str = "<string>") -> KioskConfig:
    """Parse and check TOML text; raise :class:`ConfigError` naming what is wrong."""
    cfg = parse_model(KioskConfig, text, path)
    return cfg.model_copy(update={"source_path": Path(path) if path != "<string>" else None})


def parse_model(model: type[BaseModel], text: str, path: Path | str = "<string>"):
    """TOML text checked against ``model``; a :class:`ConfigError` names file, line and key of each problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    except RecursionError:
        raise ConfigError(f"{path}: not a kiosk config: arrays or tables nested too deeply") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(k) for k in loc) or "(top level)"
            line = _line_of(text, loc)
            where = f"{path}:{line}" if line else f"{path}"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{where}: {key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def load_config(path: Path | str | None = None) -> KioskConfig:
    """Load a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return KioskConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    return parse_config(text, path)
