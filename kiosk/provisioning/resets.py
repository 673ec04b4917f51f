"""Reset codes already taken: each is good once.

A reset erases the provisioning folder and the database, so its nonce is
kept beside them, in a small JSON file of the state folder that survives
the reset (``provisioning.directory`` + ``.resets.json``), until the code
has expired (plus the clock skew allowed). The nonce is written, and synced
to disk, before the reset is carried out: a power cut in between costs a
new reset code, never a second use of this one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomicfile import write_atomic


class UsedResets:
    """Nonces of reset codes taken, with their expiry."""

    def __init__(self, path: Path, *, wall_clock=time.time, keep_s: float = 300.0):
        self.path = Path(path)
        self._wall = wall_clock
        self.keep_s = keep_s  # kept this long past expiry (clock skew)

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
            # Unreadable: keep refusing nothing silently; the file is rewritten on the next reset.
            from ..errors import StorageError

            raise StorageError(f"{self.path}: the record of used reset codes is unreadable; "
                               "remove it only if no reset code of the last hour can be replayed")
        return data

    def used(self, nonce: str) -> bool:
        return nonce in self._read()

    def record(self, nonce: str, expires_at: float) -> None:
        """Keep ``nonce`` (durably) until ``expires_at`` plus the skew; forget expired ones."""
        now = self._wall()
        kept = {n: e for n, e in self._read().items() if e + self.keep_s >= now}
        kept[nonce] = float(expires_at)
        write_atomic(self.path, json.dumps(kept), mode=0o600)
