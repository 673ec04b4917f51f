"""One way to write a file that must survive a crash: the old file or the new one, never a torn one.

Faults are real where they can be: a child process whose file-size limit
(RLIMIT_FSIZE) makes the write fail part-way, as a full disk would.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import stat
from pathlib import Path

import pytest

from fleet import fleet  # noqa: F401
from kiosk import atomicfile
from kiosk.atomicfile import write_atomic
from kiosk.errors import KeyFileError
from kiosk.keyfile import write_secret

REPO = Path(__file__).resolve().parent.parent


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def in_child_with_file_limit(limit: int, fn) -> int:
    """Run ``fn`` in a forked child that may write at most ``limit`` bytes into any file.

    Returns the child's exit code: 3 when ``fn`` failed with EFBIG (the
    fault), 0 when it returned, others for any other outcome.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 5
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            fn()
            code = 0
        except OSError as e:
            code = 3 if e.errno == errno.EFBIG else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_writes_replaces_and_sets_the_mode(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_atomic(path, "first\n")
    assert path.read_text() == "first\n" and mode(path) == 0o644
    write_atomic(path, b"second\n", mode=0o600)
    assert path.read_bytes() == b"second\n" and mode(path) == 0o600
    assert leftovers(path.parent) == []


def test_the_mode_is_set_before_any_data_is_written(tmp_path, monkeypatch):
    seen = []
    real_write = os.write

    def spy(fd, data):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(atomicfile.os, "write", spy)
    write_atomic(tmp_path / "secret", b"k" * 100_000, mode=0o600)
    write_atomic(tmp_path / "public", b"p" * 10, mode=0o644)
    assert seen and seen[0] == 0o600 and all(m == 0o600 for m in seen[:-1]) and seen[-1] == 0o644


def test_a_write_that_fails_part_way_leaves_the_old_file(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_bytes(b"old\n")
    new = b"n" * 10_000
    assert in_child_with_file_limit(4096, lambda: write_atomic(path, new)) == 3
    assert path.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []
    assert in_child_with_file_limit(100_000, lambda: write_atomic(path, new)) == 0
    assert path.read_bytes() == new


def test_a_crash_mid_write_leaves_a_temporary_file_that_a_later_write_removes(tmp_path):
    path = tmp_path / "admin.pub.jwks"
    path.write_bytes(b"old\n")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies as a power cut would stop it, between write and rename
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        write_atomic(path, b"new\n")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (left,) = leftovers(tmp_path)
    assert left.startswith(".admin.pub.jwks.") and path.read_bytes() == b"old\n"
    # Fresh, it may be another writer's: kept. An hour old, it is a crash's: removed by the next write.
    write_atomic(path, b"newer\n")
    assert leftovers(tmp_path) == [left]
    os.utime(tmp_path / left, (0, os.stat(tmp_path / left).st_mtime - atomicfile.STALE_AFTER_S - 1))
    (tmp_path / ".other.x.tmp").write_bytes(b"")  # another file's temporary: not this write's business
    os.utime(tmp_path / ".other.x.tmp", (0, 0))
    write_atomic(path, b"newest\n")
    assert leftovers(tmp_path) == [".other.x.tmp"] and path.read_bytes() == b"newest\n"


def test_a_failed_flush_never_renames(tmp_path, monkeypatch):
    path = tmp_path / "device.jwks"
    path.write_bytes(b"old")

    def failing_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomicfile.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_write_secret_is_0600_and_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "template.key"
    write_secret(path, b"a" * 32)
    assert mode(path) == 0o600
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_secret(path, b"b" * 32)
    write_secret(path, b"b" * 32, overwrite=True)
    assert path.read_bytes() == b"b" * 32 and mode(path) == 0o600


def test_installing_the_broker_ca_fails_whole_or_not_at_all(fleet, state_dir):
    """The defect: install_ca wrote the CA in place, so a power cut could leave a torn file and no TLS at boot."""
    from kiosk.provisioning.store import ProvisioningStore

    store = ProvisioningStore(fleet.config(state_dir))
    store.install(fleet.code())
    path = store.install_ca(fleet.ca.read_bytes())
    good = path.read_bytes()
    path.write_bytes(b"the CA before the update\n")
    assert in_child_with_file_limit(64, lambda: store.install_ca(fleet.ca.read_bytes())) == 3
    assert path.read_bytes() == b"the CA before the update\n"
    assert leftovers(path.parent) == []
    store.install_ca(fleet.ca.read_bytes())
    assert path.read_bytes() == good and mode(path) == 0o644


def test_a_wifi_fingerprint_is_written_through_the_helper(tmp_path):
    from kiosk.location.wifi import take_fingerprint

    path = tmp_path / "wifi-fingerprint.json"
    path.write_text("{}")
    assert in_child_with_file_limit(8, lambda: take_fingerprint(lambda: {"aa:bb:cc:dd:ee:ff": -50.0}, path)) == 3
    assert path.read_text() == "{}" and leftovers(tmp_path) == []


#: Files that may be written otherwise: an admin's or an offline tool's output, re-made by running it again.
NOT_DEVICE_STATE = {"kiosk/admin/", "kiosk/evaluation/", "kiosk/atomicfile.py"}


def test_the_device_writes_its_files_only_through_the_helper():
    """No second copy of "write a file safely" creeps back into the device's code."""
    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|os\.replace\(|\.replace\(\s*path|open\([^)]*[\"'][wax]b?[\"']")
    found = []
    for f in sorted((REPO / "kiosk").rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        if any(rel.startswith(p) for p in NOT_DEVICE_STATE):
            continue
        for no, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{rel}:{no}: {line.strip()}")
    assert not found, "write through kiosk.atomicfile.write_atomic instead:\n" + "\n".join(found)
