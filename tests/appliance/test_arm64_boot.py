"""The kiosk image booted in an arm64 virtual machine and checked from outside.

scripts/arm64-boot does the work (build-image.sh --rootfs, qemu-system-aarch64
with UEFI firmware, checks through the guest agent, a camera and a broker on
loopback); these tests run it as docs/appliance.md says and read its report.

The full boot takes about 20 minutes under emulation, so it runs only when
the image's inputs (boot_kit.stamp.INPUTS: the scripts that build it, the
units, the lock, the daemon's sd_notify and first-boot code) differ from those
of the last boot that passed, recorded in tests/arm64-boot.stamp;
``KIOSK_BOOT=full`` runs it anyway. When it runs and passes it records the new
inputs there (``--record``): commit the stamp. The short boot (build, boot, the
checks that need no first boot) runs otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.docs import docs_snippet, sh_lines

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from boot_kit import stamp  # noqa: E402
from boot_kit.machine import missing_tools  # noqa: E402


def _cannot_boot() -> str | None:
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        return "needs root and loop devices"
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists() or not Path("/usr/sbin/debootstrap").exists():
        return "needs debootstrap and qemu-user-static for the arm64 root (scripts/bootstrap installs them)"
    if missing_tools():
        return "missing " + ", ".join(missing_tools()) + " (scripts/bootstrap installs them)"
    return None


def _full_boot_due() -> str | None:
    """Why the full boot must run now (None: the last verified boot covers these inputs)."""
    if os.environ.get("KIOSK_BOOT") == "full":
        return "KIOSK_BOOT=full"
    recorded = stamp.read_stamp()
    if recorded is None:
        return f"no {stamp.STAMP.name}"
    if recorded.get("inputs") != stamp.inputs_hash():
        return "the image's inputs changed since the last verified boot"
    return None


def _run(snippet: str, report: Path, test_data: Path, *extra: str) -> dict:
    """Run a docs snippet's command, with ``--json REPORT`` and ``extra``; its report."""
    (command,) = sh_lines(snippet)
    assert command.startswith("sudo .venv/bin/python scripts/arm64-boot"), command
    argv = command.removeprefix("sudo ").split()
    argv[0] = sys.executable  # the venv the tests run in
    env = dict(os.environ, KIOSK_TEST_DATA=str(test_data))
    r = subprocess.run([*argv, "--json", str(report), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=2 * 3600)  # fmt: skip
    assert report.exists(), r.stdout[-3000:] + r.stderr[-6000:]
    result = json.loads(report.read_text())
    assert r.returncode == 0 and result["passed"], r.stdout[-6000:] + r.stderr[-6000:]
    assert "kiosk-arm64/boot." not in Path("/proc/mounts").read_text()  # nothing left mounted
    return result


def _check_boot(result: dict) -> None:
    names = [c["name"] for c in result["checks"]]
    assert names[:4] == ["image", "boot", "staged", "unit exposure (offline)"], names
    boot = result["observed"]["boot"]
    assert re.fullmatch(r"6\.1\.\d+-\d+-arm64", boot["kernel"]), boot  # Debian 12's arm64 kernel
    assert boot["loader"].startswith("systemd-boot ")
    assert boot["root"] == ["/dev/vda2", "ext4"] and boot["boot"] == ["/dev/vda1", "vfat"]
    assert "root=LABEL=rootfs" in boot["cmdline"]
    assert boot["systemd"].startswith("systemd 252 ")  # Bookworm's, as on Raspberry Pi OS
    staged = result["observed"]["staged"]
    assert re.search(r"groups=.*\(kiosk\).*\(video\).*\(gpio\)", staged["user"]), staged
    assert result["observed"]["unit exposure (offline)"]["score"] <= 2.0


@pytest.mark.slow
@pytest.mark.e2e
def test_the_image_boots_short(tmp_path, test_data):
    why = _cannot_boot()
    if why:
        pytest.skip(why)
    if _full_boot_due():
        pytest.skip("the full boot runs instead (test_the_image_boots_and_runs_the_kiosk)")
    result = _run(docs_snippet("appliance-boot-short"), tmp_path / "report.json", test_data)
    assert result["mode"] == "short"
    _check_boot(result)
    assert [c["name"] for c in result["checks"]] == ["image", "boot", "staged", "unit exposure (offline)"]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_image_boots_and_runs_the_kiosk(tmp_path, test_data):
    why = _cannot_boot()
    if why:
        pytest.skip(why)
    due = _full_boot_due()
    if not due:
        recorded = stamp.read_stamp()
        pytest.skip(f"the image's inputs are those of the boot verified on {recorded['verified']} "
                    f"({stamp.STAMP.relative_to(REPO)}); KIOSK_BOOT=full runs it again")
    before = stamp.read_stamp()
    result = _run(docs_snippet("appliance-boot"), tmp_path / "report.json", test_data, "--record")
    assert result["mode"] == "full"
    _check_boot(result)
    obs = result["observed"]
    assert [c["name"] for c in result["checks"]][4:] == [
        "first boot", "unprovisioned", "provisioned", "selftest", "check-in", "hardening", "watchdog"]
    # The first boot installed exactly the lock, from the image's wheelhouse, and handed over.
    from test_lock import LOCK, pins

    first = obs["first boot"]
    assert first["enabled"] == {"kiosk.service": "enabled", "kiosk-firstboot.service": "disabled"}
    frozen = {k.lower().replace("_", "-"): v for k, v in first["versions"].items()}
    for name, (version, _) in pins(LOCK.read_text()).items():
        assert frozen.get(name) == version, (name, version, frozen.get(name))
    # Unprovisioned: READY=1, waiting for a code that names this machine.
    assert re.fullmatch(r"unprovisioned: show the provisioning QR code to the camera "
                        r"\(a code for this kiosk: hardware id [0-9a-f]{32}\)", obs["unprovisioned"]["status"])
    # Provisioned by the code shown to its camera.
    assert re.match(r"0 residents; camera ok; frames \d+", obs["provisioned"]["status"])
    assert "elm-court" in obs["provisioned"]["provision_status"]
    # The installer's self-test on the provisioned settings: the camera, the models, the broker over TLS.
    checks = obs["selftest"]["checks"]
    assert {n: checks[n]["status"] for n in ("camera", "models", "broker")} == dict.fromkeys(
        ("camera", "models", "broker"), "ok"), checks
    assert "TLS" in checks["broker"]["detail"], checks["broker"]
    # The check-in, sealed in the machine, opened here.
    claims = obs["check-in"]["claims"]
    assert (claims["site"], claims["device"], claims["type"], claims["outcome"], claims["resident_id"]) == (
        "elm-court", "door-1", "checkin", "ACCEPTED", "resident-042")
    assert claims["location_state"] == "VERIFIED"
    # Hardening under the real systemd.
    hard = obs["hardening"]
    assert hard["score"] <= 2.0 and hard["user"] == "kiosk"
    assert set(hard["status_fields"]["CapEff"]) == {"0000000000000000"}
    assert "/var/lib/kiosk" in hard["writable"]
    assert not {"/", "/etc", "/etc/kiosk", "/usr", "/opt/kiosk", "/boot/firmware"} & set(hard["writable"])
    assert hard["private_tmp"] == "private"
    # A stalled camera: the watchdog, then systemd's restart, then running again.
    dog = obs["watchdog"]
    assert dog["restarts"] >= 1
    assert any("Watchdog timeout" in line for line in dog["journal"]), dog["journal"]
    assert any("with signal SIGABRT" in line for line in dog["journal"]), dog["journal"]
    # Before that, the daemon's own error, found by journalctl -u kiosk -p err with its fields (systemd-python).
    err = dog["error_record"]
    assert err["MESSAGE"].startswith("camera stopped delivering frames") and err["PRIORITY"] == "3", err
    assert (err["_TRANSPORT"], err["LOGGER"], err["THREAD_NAME"], err["CODE_FUNC"]) == (
        "journal", "kiosk.daemon", "match", "_tick"), err
    assert err["CODE_FILE"].endswith("/kiosk/daemon.py") and int(err["CODE_LINE"]) > 0, err
    # It passed: the stamp now vouches for these inputs (commit it).
    after = stamp.read_stamp()
    assert after != before and after["inputs"] == stamp.inputs_hash() == result["inputs"]


def test_the_stamp_names_inputs_that_exist():
    files = stamp.input_files()
    names = {f.relative_to(REPO).as_posix() for f in files}
    assert {"scripts/install.sh", "scripts/build-image.sh", "systemd/kiosk.service", "requirements.lock"} <= names
    assert re.fullmatch(r"[0-9a-f]{64}", stamp.inputs_hash())
    recorded = stamp.read_stamp()
    assert recorded is not None, f"{stamp.STAMP}: run scripts/arm64-boot --record after a full boot that passed"
    assert re.fullmatch(r"[0-9a-f]{64}", recorded["inputs"]) and recorded["verified"]
    assert recorded["timings_s"]["total"] > 0
