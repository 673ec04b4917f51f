"""The kiosk installed into a real Debian 12 arm64 root file system and run there under emulation.

scripts/arm64-check does the work (debootstrap once, install.sh --root, the
first boot's install.sh --firstboot, then the kiosk's own commands); this test
runs it and reads its report.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.docs import docs_snippet, sh_lines
from test_lock import LOCK, pins

REPO = Path(__file__).resolve().parents[2]


def _can_emulate() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot)"
    for tool in ("/usr/sbin/debootstrap", "/usr/sbin/update-binfmts"):
        if not Path(tool).exists():
            return f"{tool} is missing (scripts/bootstrap installs it)"
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists():
        return "qemu-user-static is missing (scripts/bootstrap installs it)"
    return None


@pytest.mark.slow
@pytest.mark.e2e
def test_install_and_run_on_arm64(tmp_path, test_data):
    why = _can_emulate()
    if why:
        pytest.skip(why)
    (command,) = sh_lines(docs_snippet("appliance-arm64-check"))
    assert command.startswith("sudo ")
    env = dict(os.environ, KIOSK_TEST_DATA=str(test_data))
    r = subprocess.run(["bash", "-c", command.removeprefix("sudo ")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    text = r.stdout
    # It really ran on arm64, on Bookworm's Python 3.11.
    assert re.search(r"^system: Debian GNU/Linux 12 \(bookworm\) aarch64$", text, re.M), text
    assert re.search(r"^python: 3\.11\.", text, re.M), text
    # The venv holds exactly the locked versions (nothing newer, nothing built).
    frozen = dict(re.findall(r"^  ([A-Za-z0-9._-]+)==(\S+)$", text, re.M))
    frozen = {k.lower().replace("_", "-"): v for k, v in frozen.items()}
    for name, (version, _) in pins(LOCK.read_text()).items():
        assert frozen.get(name) == version, (name, version, frozen.get(name))
    # The checks: the camera (a video file) and the models, then a decision.
    assert re.search(r"^  camera\s+ok\s", text, re.M), text
    assert re.search(r"^  models\s+ok\s", text, re.M), text
    assert "ACCEPTED" in text
    # Nothing of this run left mounted (another check may be running beside it).
    work = re.search(r"^arm64-check: work folder: (\S+)$", r.stdout + r.stderr, re.M)
    assert work, r.stderr[-3000:]
    assert work.group(1) + "/" not in Path("/proc/mounts").read_text()
