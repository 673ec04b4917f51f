"""systemd/kiosk-ingest.service: verified and rated by the real systemd-analyze, hardened like kiosk.service."""

from __future__ import annotations


from systemd_tools import REPO, exposure, make_verify_root, unit_settings, verify

UNIT = REPO / "systemd" / "kiosk-ingest.service"
EXE = "/opt/kiosk/venv/bin/kiosk-ingest"


def install(root, text: str | None = None):
    d = root / "etc/systemd/system"
    d.mkdir(parents=True, exist_ok=True)
    (d / "kiosk-ingest.service").write_text(text if text is not None else UNIT.read_text())


def test_systemd_analyze_verify_passes(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=(EXE,))
    install(root)
    r = verify(root, "kiosk-ingest.service")
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=(EXE,))
    install(root, UNIT.read_text().replace("WatchdogSec=60s", "WatchdogSec=sixty\nProtectSistem=strict"))
    r = verify(root, "kiosk-ingest.service")
    assert "ProtectSistem" in r.stderr and "sixty" in r.stderr


def test_security_exposure_is_at_least_as_good_as_the_kiosks():
    assert exposure(UNIT) <= exposure(REPO / "systemd" / "kiosk.service")
    assert exposure(UNIT) <= 2.0


def test_unit_is_a_supervised_hardened_service():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.Type"] == "notify" and one["Service.WatchdogSec"]
    assert one["Service.ExecStart"].startswith(EXE + " --config /etc/kiosk/ingest.toml")
    assert one["Service.Restart"] == "on-failure" and one["Service.RestartPreventExitStatus"] == "78"
    assert "kill -HUP $MAINPID" in one["Service.ExecReload"]
    assert one["Service.StateDirectory"] == "kiosk-ingest" and one["Service.DynamicUser"] == "yes"
    assert one["Service.ProtectSystem"] == "strict" and one["Service.DevicePolicy"] == "closed"
    assert one["Service.CapabilityBoundingSet"] == "" and one["Service.NoNewPrivileges"] == "yes"
    # The kiosk's hardening, every line of it, holds here too (except the camera and GPIO devices).
    kiosk = unit_settings((REPO / "systemd" / "kiosk.service").read_text())
    for key in ("ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictNamespaces", "LockPersonality", "SystemCallArchitectures", "SystemCallFilter", "UMask"):
        assert s[f"Service.{key}"] == kiosk[f"Service.{key}"], key
