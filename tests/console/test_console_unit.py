"""systemd/kiosk-console.service: verified and rated by the real systemd-analyze, hardened like kiosk-ingest."""

from __future__ import annotations

from systemd_tools import REPO, exposure, make_verify_root, unit_settings, verify

UNIT = REPO / "systemd" / "kiosk-console.service"
EXE = "/opt/kiosk/venv/bin/kiosk-console"


def install(root, text: str | None = None):
    d = root / "etc/systemd/system"
    d.mkdir(parents=True, exist_ok=True)
    (d / "kiosk-console.service").write_text(text if text is not None else UNIT.read_text())


def test_systemd_analyze_verify_passes(tmp_path):
    root = make_verify_root(tmp_path / "root", executables=(EXE,))
    install(root)
    r = verify(root, "kiosk-console.service")
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    install(root, UNIT.read_text().replace("UMask=0077", "UMask=0077\nProtectSistem=strict"))
    assert "ProtectSistem" in verify(root, "kiosk-console.service").stderr  # the check can fail


def test_exposure_is_no_worse_than_the_ingests():
    assert exposure(UNIT) <= exposure(REPO / "systemd" / "kiosk-ingest.service")


def test_the_signing_key_goes_to_the_console_user_alone():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.ExecStart"] == EXE + " --config /etc/kiosk/console.toml serve"
    assert one["Service.User"] == "kiosk-console" and one["Service.DynamicUser"] == "yes"
    assert "admin.jwks:/etc/kiosk/console/admin.jwks" in s["Service.LoadCredential"]
    assert one["Service.UMask"] == "0077" and one["Service.StateDirectoryMode"] == "0700"
    assert one["Service.RestartPreventExitStatus"] == "78" and one["Service.Type"] == "notify"
    ingest = unit_settings((REPO / "systemd" / "kiosk-ingest.service").read_text())
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
                "CapabilityBoundingSet", "SystemCallFilter", "RestrictAddressFamilies", "MemoryDenyWriteExecute"):
        assert s[f"Service.{key}"] == ingest[f"Service.{key}"], key
