"""systemd/kiosk.service: verified and rated by the real systemd-analyze."""

from __future__ import annotations

import shutil

from systemd_tools import UNIT, exposure, make_verify_root, unit_settings, verify


def install_unit(root, text: str | None = None):
    d = root / "etc/systemd/system"
    d.mkdir(parents=True, exist_ok=True)
    if text is None:
        shutil.copy(UNIT, d / "kiosk.service")
    else:
        (d / "kiosk.service").write_text(text)


def test_systemd_analyze_verify_passes(tmp_path):
    root = make_verify_root(tmp_path / "root")
    install_unit(root)
    r = verify(root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    # The check above is only worth something if verify complains about mistakes.
    root = make_verify_root(tmp_path / "root")
    text = UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSec=thirty\nProtectSistem=strict")
    install_unit(root, text)
    r = verify(root)
    assert "ProtectSistem" in r.stderr and "thirty" in r.stderr


def test_verify_catches_a_missing_executable(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=())
    install_unit(root)
    r = verify(root)
    assert r.returncode != 0
    assert "/opt/kiosk/venv/bin/kiosk" in r.stderr


def test_security_exposure_is_ok():
    level = exposure(UNIT)
    assert level <= 2.0, f"systemd-analyze security rates the unit {level}"


def test_unit_is_an_appliance_service():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.WatchdogSec"]
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.RestartPreventExitStatus"] == "78"
    assert one["Service.User"] == "kiosk"
    assert one["Service.StateDirectory"] == "kiosk"
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.DevicePolicy"] == "closed"
    assert one["Service.ExecStart"].startswith("/opt/kiosk/venv/bin/kiosk run")
    assert "kill -HUP $MAINPID" in one["Service.ExecReload"]
    # The relay is released after any stop, including a watchdog SIGKILL.
    assert "kiosk door release" in one["Service.ExecStopPost"]
    # Devices: the camera and the GPIO only.
    allowed = {v.split()[0] for v in s["Service.DeviceAllow"]}
    assert allowed == {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip", "/dev/gpiomem"}
    assert one["Install.WantedBy"] == "multi-user.target"
