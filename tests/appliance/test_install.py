"""scripts/install.sh --root: what it lays down in a staging root, and that it does it idempotently."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.config import load_config
from systemd_tools import UNIT, make_verify_root, unit_settings, verify

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"


def run_install(*args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", str(INSTALL), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("kiosk-*.whl")
    return whl


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode and content hash (or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = "/" + str(p.relative_to(root))
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
        else:
            out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_stages_files_with_their_modes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    key = tmp_path / "fleet.pub"
    key.write_text('{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}\n')
    r = run_install("--root", root, "--fleet-key", key)  # builds the wheel itself
    # Nothing was run on the host, and it says what it left for first boot.
    assert "would run: apt-get install" in r.stdout and "python3-picamera2" in r.stdout
    assert "would run: python3 -m venv --system-site-packages /opt/kiosk/venv" in r.stdout

    unit = root / "etc/systemd/system/kiosk.service"
    assert unit.read_text() == UNIT.read_text()
    assert mode(unit) == 0o644
    firstboot = root / "etc/systemd/system/kiosk-firstboot.service"
    fb = unit_settings(firstboot.read_text())
    assert fb["Service.ExecStart"] == ["/opt/kiosk/libexec/install.sh --firstboot"]
    assert fb["Unit.ConditionPathExists"] == ["!/opt/kiosk/venv/bin/kiosk"]
    link = root / "etc/systemd/system/multi-user.target.wants/kiosk-firstboot.service"
    assert os.readlink(link) == "/etc/systemd/system/kiosk-firstboot.service"

    assert mode(root / "etc/kiosk") == 0o750
    cfg = root / "etc/kiosk/kiosk.toml"
    assert mode(cfg) == 0o640
    assert load_config(cfg).gpio.enabled is False
    assert mode(root / "etc/kiosk/fleet-root.pub") == 0o644
    assert (root / "etc/kiosk/fleet-root.pub").read_bytes() == key.read_bytes()
    assert mode(root / "var/lib/kiosk") == 0o700

    libexec = root / "opt/kiosk/libexec/install.sh"
    assert mode(libexec) == 0o755 and libexec.read_bytes() == INSTALL.read_bytes()
    (whl,) = (root / "opt/kiosk/wheels").glob("kiosk-*.whl")
    assert mode(whl) == 0o644 and whl.stat().st_size > 10_000
    # The lock the first boot installs from, and the models' wheel it pins (built once, not at install).
    assert (root / "opt/kiosk/share/requirements.lock").read_bytes() == (REPO / "requirements.lock").read_bytes()
    (models,) = (root / "opt/kiosk/wheels").glob("face_recognition_models-*.whl")
    digest = hashlib.sha256(models.read_bytes()).hexdigest()
    assert f"--hash=sha256:{digest}" in (REPO / "requirements.lock").read_text()
    assert "would run: /opt/kiosk/venv/bin/pip install --require-hashes --only-binary=:all:" in r.stdout
    # The installed kiosk explains itself: the README and every page it links to.
    share = root / "opt/kiosk/share"
    pages = sorted(p.name for p in (INSTALL.parent.parent / "docs").glob("*.md"))
    assert pages and sorted(p.name for p in (share / "docs").glob("*.md")) == pages
    assert mode(share / "docs/appliance.md") == 0o644 and (share / "README.md").is_file()

    sysusers = (root / "etc/sysusers.d/kiosk.conf").read_text()
    assert "u kiosk" in sysusers and "m kiosk video" in sysusers and "m kiosk gpio" in sysusers
    # Nothing of the build machine leaks into the staged files.
    for rel, entry in tree(root).items():
        if entry[0] == "file" and not rel.endswith(".whl"):
            assert str(tmp_path) not in (root / rel.lstrip("/")).read_text(errors="replace"), rel


def test_units_in_the_staged_root_pass_systemd_analyze_verify(tmp_path, wheel):
    root = tmp_path / "root"
    root.mkdir()
    run_install("--root", root, "--wheel", wheel)
    make_verify_root(root)  # the distribution's units, and a stand-in for the venv first boot creates
    for unit in ("kiosk.service", "kiosk-firstboot.service"):
        r = verify(root, unit)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), unit + ": " + r.stdout + r.stderr


def test_running_twice_changes_nothing_and_keeps_edited_config(tmp_path, wheel):
    root = tmp_path / "root"
    root.mkdir()
    run_install("--root", root, "--wheel", wheel)
    cfg = root / "etc/kiosk/kiosk.toml"
    cfg.write_text(cfg.read_text().replace('site = "unprovisioned"', 'site = "block-7"'))
    before = tree(root)
    r = run_install("--root", root, "--wheel", wheel)
    assert "keeping existing /etc/kiosk/kiosk.toml" in r.stdout
    assert tree(root) == before
    assert load_config(cfg).device.site == "block-7"


def test_user_and_ownership_come_from_sysusers_and_tmpfiles(tmp_path, wheel):
    # What first boot does on the device, done here inside the staging root
    # with the real systemd tools.
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    # An OS tree: install.sh creates the user in it straight away.
    run_install("--root", root, "--wheel", wheel)
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    assert passwd["kiosk"][5] == "/var/lib/kiosk" and passwd["kiosk"][6] == "/usr/sbin/nologin"
    assert "kiosk" in group["video"][3].split(",") and group["video"][2] == "44"
    assert "kiosk" in group["gpio"][3].split(",")
    uid, gid = int(passwd["kiosk"][2]), int(group["kiosk"][2])
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(root / "etc/tmpfiles.d/kiosk.conf")],
        check=True,
        capture_output=True,
    )
    state = (root / "var/lib/kiosk").stat()
    assert (state.st_uid, state.st_gid, stat.S_IMODE(state.st_mode)) == (uid, gid, 0o700)
    assert (root / "etc/kiosk").stat().st_gid == gid
    assert (root / "etc/kiosk/kiosk.toml").stat().st_gid == gid
    # Again: same users, no duplicates.
    run_install("--root", root, "--wheel", wheel)
    users = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert users == ["root", "kiosk"]
    assert [line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()].count("gpio") == 1


def test_enable_gpio_switches_the_pins_on_in_a_new_config(tmp_path, wheel):
    root = tmp_path / "root"
    root.mkdir()
    run_install("--root", root, "--wheel", wheel, "--enable-gpio")
    cfg = load_config(root / "etc/kiosk/kiosk.toml")
    assert cfg.gpio.enabled is True
    assert cfg.motion.enabled is True  # only [gpio] was touched


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frobnicate"], "unknown argument"),
        (["--root"], "--root needs a directory"),
        (["--root", "/nonexistent/kiosk-root"], "no such directory"),
        (["--root", "/"], "leave out --root"),
        (["--wheel", "/nonexistent.whl", "--dry-run"], "no such file"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    r = run_install(*args, check=False)
    assert r.returncode == 2
    assert message in r.stderr


def test_dry_run_on_the_host_changes_nothing(tmp_path, wheel):
    before = {p: p.exists() for p in (Path("/etc/kiosk"), Path("/opt/kiosk"), Path("/etc/sysusers.d/kiosk.conf"))}
    r = run_install("--dry-run", "--wheel", wheel)
    assert "would install /etc/systemd/system/kiosk.service" in r.stdout
    assert "would run: systemctl enable kiosk.service" in r.stdout
    assert "dry run: nothing was changed" in r.stdout
    assert {p: p.exists() for p in before} == before


def test_help():
    r = run_install("--help")
    assert "--root DIR" in r.stdout and "--firstboot" in r.stdout


def test_the_commands_are_on_path_with_their_man_pages_and_completions(tmp_path, wheel):
    root = tmp_path / "root"
    root.mkdir()
    r = run_install("--root", root, "--wheel", wheel)
    for command in ("kiosk", "kiosk-admin", "kiosk-ingest"):
        # /usr/local: what no Debian package installed; the venv's entry point appears at first boot.
        assert os.readlink(root / "usr/local/bin" / command) == f"/opt/kiosk/venv/bin/{command}"
        for installed, generated in ((f"usr/local/share/man/man1/{command}.1", f"share/man/man1/{command}.1"),
                                     (f"usr/local/share/bash-completion/completions/{command}",
                                      f"share/bash-completion/completions/{command}")):
            assert (root / installed).read_bytes() == (REPO / generated).read_bytes()
            assert mode(root / installed) == 0o644
    # A file of someone else's at a link's place is kept, and said so.
    (root / "usr/local/bin/kiosk").unlink()
    (root / "usr/local/bin/kiosk").write_text("#!/bin/sh\n")
    r = run_install("--root", root, "--wheel", wheel)
    assert "warning: keeping /usr/local/bin/kiosk" in r.stdout
    assert (root / "usr/local/bin/kiosk").read_text() == "#!/bin/sh\n"
    r = run_install("--dry-run", "--wheel", wheel)
    assert "would link /usr/local/bin/kiosk-admin -> /opt/kiosk/venv/bin/kiosk-admin" in r.stdout
    assert "would install /usr/local/share/man/man1/kiosk-ingest.1 (mode 0644)" in r.stdout
