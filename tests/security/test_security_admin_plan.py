"""Issue 14, finding 3 (the admin's side): `kiosk-admin gallery publish` plans on signed acks only.

Over a real Mosquitto whose ACL is the one the review attacked (device
patterns by ``%u``, the device id alone: ``door-1`` of oak-park may write
``kiosk/elm-court/door-1/status`` and ``…/ack``). The broker-side fix (binding
identities to site and device) is tested with the broker configuration; here
the attack messages still get through the broker, and the admin tool must
not change its plan because of them:

- a retained status claiming the site's version and digest, for a door-1
  that is behind (before the fix: "nothing to publish", so a door that still
  recognises an erased resident is never sent the snapshot);
- oak-park's door-1's own signed ack, retained on elm-court's door-1's topic
  (it replaced the genuine retained ack: before the fix the admin then knew
  nothing of door-1, and sent it nothing);
- a genuine but older ack of door-1, replayed.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

from harness.broker import Broker, MqttProbe
from harness.gallery_kit import mqtt_toml, vectors
from kiosk.admin import main as admin_main
from kiosk.config import parse_config
from kiosk.gallery.store import Resident, open_store
from kiosk.sync import keys as keymod
from kiosk.sync.updates.admin import AdminGallery, Ledger
from kiosk.sync.updates.format import ack_claims, sign_ack

pytestmark = pytest.mark.e2e

SITE, DEVICE = "elm-court", "door-1"

#: The ACL the review attacked: a device is known by its id alone (``%u``), whatever its site.
REVIEWED_ACL = """\
pattern write kiosk/+/%u/events
pattern readwrite kiosk/+/%u/status
pattern read kiosk/+/%u/gallery/#
pattern read kiosk/+/gallery/#
pattern write kiosk/+/%u/ack

user backend
topic read kiosk/#
topic write kiosk/+/+/gallery/#
topic write kiosk/+/gallery/#
"""


@pytest.fixture
def fleet(tmp_path, broker_pki):
    """The broker, the admin (enrollment database at version 2 of elm-court), elm-court's door-1 and its keys."""
    broker = Broker(tmp_path / "mosquitto", broker_pki, acl=REVIEWED_ACL).start()
    admin_dir = tmp_path / "admin"
    admin_dir.mkdir()
    assert admin_main(["gallery", "admin-key", "--out", str(admin_dir / "admin.jwks")]) == 0
    toml = admin_dir / "admin.toml"
    toml.write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{admin_dir}"\n' + mqtt_toml(broker, "backend"))
    store = open_store(parse_config(toml.read_text()))
    rng = np.random.default_rng(7)
    for i in range(3):
        store.upsert_resident(Resident(f"R-{i}", f"Resident {i}"))
        store.add_template(f"R-{i}", vectors(rng)[0])
    gallery = AdminGallery.read(store)
    ledger = Ledger(store, SITE)
    ledger.record(1, "snapshot", str(uuid.uuid4()), gallery)
    ledger.record(2, "delta", str(uuid.uuid4()), gallery)
    store.db.close()
    door = keymod.generate(f"{SITE}/{DEVICE}")
    keymod.save_public(admin_dir / "door-1.pub.jwks", door)
    genuine = MqttProbe(broker, DEVICE, client_id=f"kiosk-{SITE}-{DEVICE}")
    intruder = MqttProbe(broker, DEVICE, client_id="kiosk-oak-park-door-1")  # oak-park's door-1: its certificate says door-1
    try:
        yield broker, admin_dir, gallery, door, genuine, intruder
    finally:
        genuine.close()
        intruder.close()
        broker.kill()


def ack(device_keys, *, version: int, digest: str, result: str = "applied", site: str = SITE, device: str = DEVICE,
        at: float | None = None) -> bytes:
    claims = ack_claims(site=site, device=device, result=result, version=version, digest=digest,
                        now=time.time() if at is None else at)
    return sign_ack(claims, device_keys).encode()


def publish(capsys, admin_dir, *extra) -> str:
    status = admin_main(["--config", str(admin_dir / "admin.toml"), "gallery", "publish", "--key",
                         str(admin_dir / "admin.jwks"), "--devices", str(admin_dir / "door-1.pub.jwks"),
                         "--wait", "1", *extra])
    out = capsys.readouterr().out
    assert status in (0, 4), out  # 4: door-1 (played by these probes) does not answer the snapshot
    return out


def gallery_status(capsys, admin_dir) -> str:
    assert admin_main(["--config", str(admin_dir / "admin.toml"), "gallery", "status", "--devices",
                       str(admin_dir / "door-1.pub.jwks"), "--wait", "1.5"]) == 0
    return capsys.readouterr().out


#: PUBACK codes of a message the broker took: 0, or 16 ("no matching subscribers": retained all the same).
TAKEN = (0, 16)
BEHIND = "snapshot version 2: 3 operation(s) to device door-1"


def test_a_forged_status_does_not_hide_a_device_behind(fleet, capsys):
    broker, admin_dir, gallery, door, genuine, intruder = fleet
    old_digest = "1" * 64
    # door-1 of elm-court is behind: it says so in its own signed ack.
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", ack(door, version=1, digest=old_digest), retain=True) in TAKEN
    # oak-park's door-1 writes a status on elm-court's door-1 topic: "I hold version 2, in step".
    forged = {"state": "online", "time": time.time() + 60,
              "gallery": {"updates": "on", "version": 2, "digest": gallery.digest, "wants_snapshot": False}}
    assert intruder.publish(f"kiosk/{SITE}/{DEVICE}/status", json.dumps(forged).encode(), retain=True) in TAKEN
    out = publish(capsys, admin_dir)
    assert BEHIND in out, out
    assert "nothing to publish" not in out


def test_another_devices_ack_on_its_topic_does_not_change_the_plan(fleet, capsys):
    broker, admin_dir, gallery, door, genuine, intruder = fleet
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", ack(door, version=1, digest="1" * 64), retain=True) in TAKEN
    out = gallery_status(capsys, admin_dir)  # the admin sees door-1's genuine ack once: it is remembered
    assert "door-1" in out and "applied" in out
    # oak-park's door-1, with its own key, claims to be elm-court's door-1 holding version 2.
    oak = keymod.generate(f"oak-park/{DEVICE}")
    for token in (ack(oak, version=2, digest=gallery.digest, site="oak-park"),
                  ack(oak, version=2, digest=gallery.digest, at=time.time() + 60)):
        assert intruder.publish(f"kiosk/{SITE}/{DEVICE}/ack", token, retain=True) in TAKEN
        out = publish(capsys, admin_dir)
        assert BEHIND in out, out
        assert "warning: door-1: the retained ack does not verify" in out


def test_an_older_genuine_ack_replayed_does_not_change_the_plan(fleet, capsys):
    broker, admin_dir, gallery, door, genuine, intruder = fleet
    earlier = ack(door, version=2, digest=gallery.digest, at=time.time() - 3600)  # once in step, an hour ago
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", earlier, retain=True) in TAKEN
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", ack(door, version=1, digest="1" * 64, result="holding"),
                           retain=True) in TAKEN  # restarted on an old database: behind
    gallery_status(capsys, admin_dir)
    assert intruder.publish(f"kiosk/{SITE}/{DEVICE}/ack", earlier, retain=True) in TAKEN  # replayed by someone else
    out = publish(capsys, admin_dir)
    assert BEHIND in out, out
    assert "older than the one remembered (replayed?)" in out, out  # the replay is named


def test_the_remembered_ack_retained_again_is_no_replay(fleet, capsys):
    """Issue 19, finding 6: the retained ack that is the one remembered raises no "replayed?" warning.

    Before the fix every run after the first warned about the device's own
    genuine ack (the remembered copy replaced the retained one as a new
    object), crying wolf on every device that had nothing new to say.
    """
    broker, admin_dir, gallery, door, genuine, intruder = fleet
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", ack(door, version=1, digest="1" * 64), retain=True) in TAKEN
    for _ in range(2):  # the first run remembers the ack; the second finds the same one retained
        out = publish(capsys, admin_dir)
        assert BEHIND in out, out
        assert "warning" not in out, out
    status = gallery_status(capsys, admin_dir)
    assert "replayed" not in status, status


@pytest.mark.parametrize("odd", [{"time": 10**400}, {"version": float("inf")}, {"time": float("nan")},
                                 {"version": True}, {"offered_version": 10**400}, {"result": ["applied"]}])
def test_a_stolen_door_key_signing_odd_numbers_does_not_stop_the_plan(fleet, capsys, odd):
    """The door's own key (stolen) signs an ack whose numbers JSON lets through but no plan can use: before, the
    publisher raised OverflowError on every round, and no update (no erasure) reached any door of the site."""
    from joserfc import jws

    from kiosk.sync.envelope import SIG_ALG
    from kiosk.sync.updates.format import ACK_TYP

    broker, admin_dir, gallery, door, genuine, intruder = fleet
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", ack(door, version=1, digest="1" * 64), retain=True) in TAKEN
    gallery_status(capsys, admin_dir)  # door-1's genuine ack, remembered: it is behind
    claims = {**ack_claims(site=SITE, device=DEVICE, result="applied", version=2, digest=gallery.digest,
                           now=time.time() + 60), **odd}
    payload = json.dumps(claims, sort_keys=True).encode()  # Infinity and NaN as Python writes them
    token = jws.serialize_compact({"alg": SIG_ALG, "kid": door.signing.kid, "typ": ACK_TYP}, payload, door.signing,
                                  algorithms=[SIG_ALG])
    assert genuine.publish(f"kiosk/{SITE}/{DEVICE}/ack", token.encode(), retain=True) in TAKEN
    out = publish(capsys, admin_dir)
    assert BEHIND in out, out  # planned on what is remembered of door-1, not on the odd ack
    assert "warning: door-1: the retained ack does not verify" in out, out
