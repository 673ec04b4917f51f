"""Frame sources: cameras, streams, files, folders and replays.

``import kiosk.capture`` needs no camera library: each backend is imported
when a source of its kind is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from ..config import CaptureSettings
from ..errors import ConfigError
from .base import BaseSource, Frame, FrameSource, to_bgr
from .reader import CaptureThread

__all__ = [
    "BaseSource",
    "CaptureThread",
    "Frame",
    "FrameSource",
    "SourceSpec",
    "open_source",
    "parse_source_spec",
    "to_bgr",
]

SPEC_HELP = (
    'expected "picamera2[:N]", "opencv:N", "rtsp://…", "http(s)://…", "folder:DIR", '
    '"file:PATH", "replay:PATH[?loop=1&live=0]", or the path of a video file or image folder'
)

_STREAM = re.compile(r"^(rtsps?|rtmp|https?)://", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_REPLAY_OPTIONS = {"loop", "live"}


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``capture.source``: which backend, what it opens, and replay options."""

    kind: str  # picamera2, opencv-device, stream, folder, file, replay
    target: int | str | Path
    options: dict[str, bool] = field(default_factory=dict)


def parse_source_spec(spec: str) -> SourceSpec:
    """Check a source spec without opening anything; :class:`ConfigError` if it is wrong.

    Paths must exist: a typo is caught at start-up, not at the first frame.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"capture.source is empty: {SPEC_HELP}")
    if _STREAM.match(spec):
        return SourceSpec("stream", spec)
    scheme_match = _SCHEME.match(spec)
    scheme = scheme_match.group(1).lower() if scheme_match else None
    rest = spec[len(scheme) + 1 :] if scheme else spec
    if scheme == "picamera2" or spec.lower() == "picamera2":
        return SourceSpec("picamera2", _index(spec, rest if scheme else "0"))
    if scheme == "opencv":
        return SourceSpec("opencv-device", _index(spec, rest))
    if scheme == "folder":
        return SourceSpec("folder", _existing(spec, rest, want_dir=True))
    if scheme == "file":
        return SourceSpec("file", _existing(spec, rest, want_dir=False))
    if scheme == "replay":
        path, _, query = rest.partition("?")
        return SourceSpec("replay", _existing(spec, path, want_dir=None), _replay_options(spec, query))
    path = Path(spec).expanduser()
    if path.is_dir():
        return SourceSpec("folder", path)
    if path.is_file():
        return SourceSpec("file", path)
    if scheme and len(scheme) > 1:  # one letter could be a Windows drive; we do not run there
        raise ConfigError(f"capture.source {spec!r}: unknown kind of source {scheme!r}: {SPEC_HELP}")
    raise ConfigError(f"capture.source {spec!r}: no such file or folder ({SPEC_HELP})")


def open_source(spec: str, settings: CaptureSettings | None = None) -> FrameSource:
    """Build the frame source a spec names; nothing is opened until ``start()``."""
    settings = settings or CaptureSettings()
    parsed = parse_source_spec(spec)
    if parsed.kind == "picamera2":
        from .picamera2 import Picamera2Source

        return Picamera2Source(parsed.target, settings)
    if parsed.kind in ("opencv-device", "stream", "file"):
        from .opencv import OpenCVSource

        return OpenCVSource(parsed.target, settings)
    if parsed.kind == "folder":
        from .folder import FolderSource

        return FolderSource(parsed.target, fps=settings.fps)
    if parsed.kind == "replay":
        from .replay import ReplaySource

        live = parsed.options.get("live", True)
        return ReplaySource.from_path(
            parsed.target,
            live=live,
            loop=parsed.options.get("loop", False),
            stall_timeout=settings.stall_timeout,
        )
    raise AssertionError(f"unhandled source kind {parsed.kind}")  # pragma: no cover


def _index(spec: str, text: str) -> int:
    if not re.fullmatch(r"\d{1,3}", text.strip()):
        raise ConfigError(f"capture.source {spec!r}: camera number must be a small whole number, got {text!r}")
    return int(text)


def _existing(spec: str, text: str, *, want_dir: bool | None) -> Path:
    if not text:
        raise ConfigError(f"capture.source {spec!r}: no path given")
    path = Path(text).expanduser()
    if want_dir is True and not path.is_dir():
        raise ConfigError(f"capture.source {spec!r}: no such folder")
    if want_dir is False and not path.is_file():
        raise ConfigError(f"capture.source {spec!r}: no such file")
    if want_dir is None and not path.exists():
        raise ConfigError(f"capture.source {spec!r}: no such file or folder")
    return path


def _replay_options(spec: str, query: str) -> dict[str, bool]:
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _REPLAY_OPTIONS:
            raise ConfigError(f"capture.source {spec!r}: unknown replay option {key!r} (known: loop, live)")
        if value.lower() in ("", "1", "true", "yes", "on"):  # a bare "loop" means loop=1
            options[key] = True
        elif value.lower() in ("0", "false", "no", "off"):
            options[key] = False
        else:
            raise ConfigError(f"capture.source {spec!r}: replay option {key}={value!r} must be 1 or 0")
    return options
