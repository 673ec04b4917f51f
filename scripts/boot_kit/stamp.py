"""The image's inputs, hashed; and the stamp the last verified boot left.

The full boot takes a quarter of an hour under emulation: too long for every
test run. It runs when what goes into the image or decides how it boots has
changed since the last boot that passed, which recorded the hash of those
inputs in ``tests/arm64-boot.stamp`` (``scripts/arm64-boot --record``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
STAMP = REPO / "tests" / "arm64-boot.stamp"

#: What makes the image, and decides how it boots and how the kiosk's units run
#: it: the scripts that build it, the units, the lock, the daemon's side of the
#: unit (sd_notify: READY=1, WATCHDOG=1) and of the first boot (waiting for a
#: provisioning code), and the check itself. The rest of the kiosk's code is
#: the same on any machine: the regular tests cover it.
INPUTS = (
    "scripts/install.sh",
    "scripts/install-commands",
    "scripts/build-image.sh",
    "scripts/arm64-rootfs",
    "scripts/arm64-vm-root",
    "scripts/wheelhouse",
    "scripts/arm64-boot",
    "scripts/boot_kit/*.py",
    "systemd/kiosk.service",
    "requirements.lock",
    "kiosk/notify.py",
    "kiosk/provisioning/startup.py",
)


def input_files(repo: Path = REPO) -> list[Path]:
    files: set[Path] = set()
    for pattern in INPUTS:
        found = sorted(repo.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no file matches {pattern} in {repo}")
        files.update(found)
    return sorted(files)


def inputs_hash(repo: Path = REPO) -> str:
    """SHA-256 over each input's path and content."""
    h = hashlib.sha256()
    for f in input_files(repo):
        h.update(f.relative_to(repo).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def read_stamp(path: Path = STAMP) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_stamp(record: dict, path: Path = STAMP) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
