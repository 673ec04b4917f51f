"""Writing a file so that a crash or a power cut leaves the old one or the new one, never half of either.

The data goes to a temporary file in the same folder (so the rename cannot
cross file systems), whose mode is set before any data is in it; the file is
flushed to the disk, renamed over the target in one step, and the folder is
flushed too, so that the rename itself survives a power cut. Every file the
device must find intact at boot (keys, the broker's CA, the provisioning
code, the Wi-Fi fingerprint) is written through :func:`write_atomic`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

#: A temporary file of :func:`write_atomic` older than this was left by a crash (a write takes milliseconds).
STALE_AFTER_S = 3600.0


def write_atomic(path: Path | str, data: bytes | str, *, mode: int = 0o644, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` atomically and durably; the file gets ``mode``.

    On any failure the old file (if any) is left as it was and the temporary
    file is removed.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode(encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # Before the data: a secret is never readable by others, not even for a moment.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def remove_stale(path: Path | str, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files a crash left beside ``path`` (``.NAME.*.tmp``, over an hour old)."""
    path = Path(path)
    now = time.time() if now is None else now
    removed = []
    for left in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - left.stat().st_mtime > STALE_AFTER_S:
                left.unlink()
                removed.append(left)
        except FileNotFoundError:
            pass
    return removed


def fsync_dir(folder: Path | str) -> None:
    """Flush a folder's entries (a rename or a new file in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
