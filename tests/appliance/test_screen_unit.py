"""systemd/kiosk-screen.service (Chromium under cage) and the voice drop-in, checked by the real systemd tools
and installed as docs/screen.md says."""

from __future__ import annotations

import re
from pathlib import Path
import shlex
import shutil
import subprocess

import pytest

from harness.docs import docs_snippet, sh_lines
from systemd_tools import REPO, make_verify_root, unit_settings, verify

SCREEN_UNIT = REPO / "systemd" / "kiosk-screen.service"
EXECUTABLES = ("/opt/kiosk/venv/bin/kiosk", "/usr/bin/cage", "/usr/bin/chromium", "/usr/bin/bash")


def install_as_documented(root) -> list[str]:
    """The page's install commands, run into ``root`` instead of / (apt-get: the packages must exist)."""
    done = []
    for line in sh_lines(docs_snippet("screen-install")):
        words = shlex.split(line.split("#")[0])
        if words[0] == "sudo":
            words = words[1:]
        if words[:2] == ["apt-get", "install"]:
            pkgs = [w for w in words[2:] if not w.startswith("-")]
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs], capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.count("Package: ") == len(pkgs), r.stderr
        elif words[0] == "install":  # as written: the source from the checkout, the target under root
            *opts, src, dst = words[1:]
            target = str(root / dst.lstrip("/")) + ("/" if dst.endswith("/") else "")
            subprocess.run(["install", *opts, str(REPO / src), target], check=True)
        elif words[0] == "systemd-sysusers":
            args = [str(root / w.lstrip("/")) if w.startswith("/") else w for w in words[1:]]
            subprocess.run(["systemd-sysusers", f"--root={root}", *args], check=True)
        elif words[0] == "systemctl" and words[1] in ("enable", "set-default"):
            subprocess.run(["systemctl", f"--root={root}", *words[1:]], check=True, capture_output=True)
        else:
            raise AssertionError(f"docs/screen.md: a command the test does not know how to run: {line}")
        done.append(words[0])
    return done


def test_installed_as_documented_and_verified(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=EXECUTABLES)
    (root / "etc").mkdir(exist_ok=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).touch()
    (root / "etc/systemd/system").mkdir(parents=True)  # as install.sh leaves it: kiosk.service there
    shutil.copy(REPO / "systemd/kiosk.service", root / "etc/systemd/system/kiosk.service")
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    install_as_documented(root)
    assert re.search(r"^kiosk-screen:x:\d+:\d+:Door screen:/var/lib/kiosk-screen:", (root / "etc/passwd").read_text(),
                     re.M)
    groups = (root / "etc/group").read_text()
    for g in ("video", "render", "input"):
        assert re.search(rf"^{g}:x:\d+:kiosk-screen$", groups, re.M), groups
    assert (root / "etc/systemd/system/graphical.target.wants/kiosk-screen.service").is_symlink()
    assert (root / "etc/systemd/system/kiosk.service.d/voice.conf").is_file()
    r = verify(root, "kiosk-screen.service")
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    r = verify(root, "kiosk.service")  # with the voice drop-in
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_verify_catches_a_missing_compositor(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=("/usr/bin/chromium", "/usr/bin/bash"))
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(SCREEN_UNIT, root / "etc/systemd/system/kiosk-screen.service")
    r = verify(root, "kiosk-screen.service")
    assert r.returncode != 0 and "/usr/bin/cage" in r.stderr


def test_the_unit_shows_the_page_full_screen_apart_from_the_kiosk():
    s = unit_settings(SCREEN_UNIT.read_text().replace("\\\n", " "))
    one = {k: v[-1] for k, v in s.items()}
    cmd = shlex.split(one["Service.ExecStart"])
    assert cmd[:3] == ["/usr/bin/cage", "-d", "--"] and cmd[3] == "/usr/bin/chromium"
    assert "--kiosk" in cmd and "--ozone-platform=wayland" in cmd and "--incognito" in cmd
    from kiosk.config import KioskConfig

    screen = KioskConfig().screen
    assert cmd[-1] == f"http://{screen.bind}:{screen.port}/"  # the page, where the default config serves it
    assert f"/dev/tcp/{screen.bind}/{screen.port}" in one["Service.ExecStartPre"]
    assert one["Service.User"] == "kiosk-screen"  # not kiosk: the browser cannot read /var/lib/kiosk
    assert one["Service.PAMName"] == "login" and one["Service.TTYPath"] == "/dev/tty1"
    assert one["Unit.Conflicts"] == "getty@tty1.service"
    assert one["Install.WantedBy"] == "graphical.target"


@pytest.mark.slow
@pytest.mark.e2e
def test_the_units_browser_under_cage_follows_the_page(tmp_path):
    """The unit's own ExecStart (cage, then Chromium in kiosk mode) on wlroots' headless backend, as an
    unprivileged user, loads the page, its picture and its event stream from a real door screen."""
    import os
    import signal
    import tempfile
    import time

    from kiosk.config import ScreenSettings
    from kiosk.screen.panel import DoorScreen

    for exe in ("cage", "chromium", "Xwayland"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not installed (scripts/bootstrap installs cage, chromium and xwayland)")
    one = {k: v[-1] for k, v in unit_settings(SCREEN_UNIT.read_text().replace("\\\n", " ")).items()}
    cmd = shlex.split(one["Service.ExecStart"])
    home = Path(tempfile.mkdtemp(prefix="kiosk-screen-"))  # not under pytest's root-only folder
    as_user: list[str] = []
    if os.geteuid() == 0:  # cage refuses to run as root; the unit runs it as kiosk-screen
        os.chown(home, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    asked: list[str] = []
    screen = DoorScreen(ScreenSettings(enabled=True, port=0))
    app = screen.server._server.application

    def recording(environ, start_response):
        asked.append(environ["PATH_INFO"])
        return app(environ, start_response)

    screen.server._server.application = recording
    cmd = [f"--user-data-dir={home}/chromium" if a.startswith("--user-data-dir=") else a for a in cmd[:-1]]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "WLR_BACKENDS": "headless",
           "WLR_RENDERER": "pixman", "WLR_LIBINPUT_NO_DEVICES": "1"}
    with screen:
        proc = subprocess.Popen(as_user + cmd + [screen.url], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not {"/", "/events", "/camera.jpg"} <= set(asked):
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            shutil.rmtree(home, ignore_errors=True)
    assert {"/", "/static/door.css", "/static/door.js", "/events", "/camera.jpg"} <= set(asked), asked
