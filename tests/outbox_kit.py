"""One door's outbox and keys, for the tests that publish its events through a real broker.

Import the fixtures into a test module (``from outbox_kit import outbox``; the keys are in conftest.py)
to use them there.
"""

from __future__ import annotations


import pytest

from harness.broker import device_cn
from kiosk.config import OutboxSettings
from kiosk.db import open_database
from kiosk.match.decide import Decision, Outcome
from kiosk.sync.events.outbox import Outbox
from harness.polling import wait_for  # noqa: F401 (re-exported to the tests that import it from here)

SITE, DEVICE = "test-site", "kiosk-t1"
CN = device_cn(SITE, DEVICE)  # the door's broker identity


@pytest.fixture
def outbox(tmp_path):
    db = open_database(tmp_path / "kiosk.db")
    yield Outbox(db, site=SITE, device=DEVICE, settings=OutboxSettings())
    db.close()


def decision(i: int) -> Decision:
    return Decision(Outcome.ACCEPTED, track_id=i, resident_id=f"r-{i % 3}", distance=0.3, margin=0.1, frames=3)


