"""``kiosk-console serve`` as the unit runs it: a process that says READY=1 to systemd, serves, stops on SIGTERM;
``--validate-config`` and a bad config's exit status 78."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness.polling import wait_for
from harness.postgres import free_port
from systemd_tools import NotifySocket

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, port: int, extra: str = "") -> Path:
    (tmp_path / "console").mkdir(exist_ok=True)
    f = tmp_path / "console.toml"
    f.write_text(f'[console]\nstate_dir = "{tmp_path / "console"}"\nport = {port}\n[store]\nurl = "sqlite:///events.db"\n'
                 f'[gallery]\nstate_dir = "{tmp_path / "gallery"}"\n[broker]\nenabled = false\n'
                 f'[logging]\njournald = false\n{extra}')
    return f


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk.console.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


def test_serve_says_ready_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    conf = config(tmp_path, port)
    notify = NotifySocket(tmp_path / "notify")
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.console.cli", "--config", str(conf), "serve"],
                            env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": notify.address},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY=1", 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as r:
            page = r.read().decode()
            assert r.status == 200 and "csrf_token" in page
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        key = tmp_path / "console" / "console-session.key"
        assert key.stat().st_mode & 0o777 == 0o600  # made at the first start, for the service alone
        # Charts are warmed up at start (matplotlib and its fonts loaded): the first one asked for is quick.
        maps = Path(f"/proc/{proc.pid}/maps")
        assert wait_for(lambda: "ft2font" in maps.read_text(), 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_validate_config_and_a_bad_key_exit_78(tmp_path):
    good = config(tmp_path, 8080)
    r = run("--validate-config", str(good))
    assert r.returncode == 0 and r.stdout.strip() == f"{good}: OK"
    bad = config(tmp_path, 8080, "[console2]\nx = 1\n")
    r = run("--config", str(bad), "serve")
    assert r.returncode == 78 and "console2: unknown key" in r.stderr
    loose = tmp_path / "admin.jwks"
    loose.write_text("{}")
    loose.chmod(0o644)
    r = run("--config", str(config(tmp_path, 8080, f'[keys]\nbackend_key = "{loose}"\n')), "serve")
    assert r.returncode == 78 and "accessible by others" in r.stderr
