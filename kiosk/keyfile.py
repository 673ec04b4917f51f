"""Reading and writing secret files: 0600, atomic, refused when readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .atomicfile import write_atomic
from .errors import KeyFileError


def credential_path(path: Path | str) -> Path:
    """A relative name found in systemd's ``$CREDENTIALS_DIRECTORY`` wins over the path as given."""
    path = Path(path)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and not path.is_absolute() and (Path(creds) / path.name).is_file():
        return Path(creds) / path.name
    return path


def check_private(path: Path | str) -> None:
    """Refuse a secret file that group or others can read or write."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file missing") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: key file is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")


def read_secret(path: Path | str) -> bytes:
    path = Path(path)
    check_private(path)
    return path.read_bytes()


def write_secret(path: Path | str, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` as 0600, atomically and durably (see :func:`~kiosk.atomicfile.write_atomic`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: exists; refusing to overwrite a key")
    return write_atomic(path, data, mode=0o600)
