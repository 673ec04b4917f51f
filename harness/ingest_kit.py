"""A simulated site and a real ``kiosk-ingest`` process, for the back-end tests and the ingest benchmark.

- :class:`SimulatedSite`: the back end's keys, a folder of the doors' public keys,
  and per door a kiosk config for ``python -m kiosk.sync.events.loadgen``
  (the real outbox and publisher fed with synthetic decisions);
- :class:`IngestProcess`: ``python -m kiosk.backend.ingest`` with its own
  config file, started, SIGTERMed or SIGKILLed by PID.

Nothing here needs pytest, so ``scripts/bench-ingest`` uses it too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .polling import wait_for  # noqa: F401 (re-exported to the tests that import it from here)

REPO = Path(__file__).resolve().parent.parent
SITE = "elm-court"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class SimulatedSite:
    """Keys and configs of ``n`` doors of one site, and of the back end, under ``root``."""

    def __init__(self, root: Path, broker, n: int, *, site: str = SITE):
        from kiosk.sync import keys as keymod

        self.root = Path(root)
        self.broker = broker
        self.site = site
        self.doors = [f"door-{i + 1}" for i in range(n)]
        self.backend = keymod.generate("backend")
        self.backend_key = keymod.save_private(self.root / "backend" / "backend.jwks", self.backend, overwrite=True)
        self.devices_dir = self.root / "backend" / "devices"
        self.devices_dir.mkdir(parents=True, exist_ok=True)
        self.keys = {}
        for door in self.doors:
            k = keymod.generate(f"{site}/{door}")
            self.keys[door] = k
            state = self.root / door
            keymod.save_private(state / "device.jwks", k, overwrite=True)
            keymod.save_public(state / "backend.pub.jwks", self.backend, overwrite=True)
            keymod.save_public(self.devices_dir / f"{site}.{door}.pub.jwks", k, overwrite=True)
            self._kiosk_config(door)

    def cn(self, door: str) -> str:
        """The door's broker identity (certificate common name)."""
        return self.broker.device_cn(self.site, door)

    def _kiosk_config(self, door: str) -> Path:
        state = self.root / door
        cert, key = self.broker.pki.client(self.cn(door))
        cfg = state / "kiosk.toml"
        cfg.write_text(f"""\
[device]
site = "{self.site}"
device_id = "{door}"
state_dir = "{state}"

[mqtt]
enabled = true
url = "{self.broker.url}"
ca_file = "{self.broker.pki.ca_file}"
client_cert = "{cert}"
client_key = "{key}"
keepalive = 5
connect_timeout = 3.0
reconnect_backoff_initial = 0.1
reconnect_backoff_max = 0.5
inflight = 50

[logging]
level = "WARNING"
journald = false
""")
        return cfg

    def config(self, door: str) -> Path:
        return self.root / door / "kiosk.toml"

    def loadgen(self, door: str, *args: str) -> "Producer":
        return Producer(self.config(door), *args)

    def ingest_config(self, store_url: str, name: str = "ingest", **ingest: object) -> Path:
        """An ingest.toml for this fleet's broker and keys; ``ingest`` overrides [broker]/[ingest] keys."""
        cert, key = self.broker.pki.client("backend")
        broker_keys = {"client_id": f"kiosk-{name}", "share_group": "", "session_expiry_s": 3600,
                       "reconnect_backoff_max": 1.0, "keepalive": 5, "connect_timeout": 5.0}
        ingest_keys = {"batch_max": 500}
        store_keys = {}
        for k, v in ingest.items():
            if k in ("retention_days", "purge_interval_s"):
                store_keys[k] = v
            else:
                (broker_keys if k in broker_keys or k in ("receive_maximum",) else ingest_keys)[k] = v

        def toml(d):
            return "\n".join(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
                             for k, v in d.items())

        path = self.root / "backend" / f"{name}.toml"
        state = self.root / "backend" / name
        state.mkdir(parents=True, exist_ok=True)
        path.write_text(f"""\
[broker]
url = "{self.broker.url}"
ca_file = "{self.broker.pki.ca_file}"
client_cert = "{cert}"
client_key = "{key}"
{toml(broker_keys)}

[keys]
backend_key = "{self.backend_key}"
devices = "{self.devices_dir}"

[store]
url = "{store_url}"
{toml(store_keys)}

[ingest]
state_dir = "{state}"
{toml(ingest_keys)}

[logging]
level = "INFO"
journald = false
""")
        return path


class Producer:
    """One ``loadgen`` process; ``committed`` holds the event ids whose commit returned."""

    def __init__(self, config: Path, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.sync.events.loadgen", "--config", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def committed(self) -> list[str]:
        return [ln.split()[2] for ln in list(self._lines) if ln.startswith("committed ")]

    def wait(self, timeout: float = 120.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr else ""


class IngestProcess:
    """``python -m kiosk.backend.ingest --config FILE``, stopped by PID."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None):
        self.config = config
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "IngestProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.backend.ingest", "--config", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log, "a"),
            env={**_env(), **self.env},
        )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_subscribed(self, mark: int = 0, timeout: float = 30.0) -> bool:
        return wait_for(lambda: "ingest running" in self.log_text()[mark:] or not self.running(), timeout) \
            and self.running()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None
