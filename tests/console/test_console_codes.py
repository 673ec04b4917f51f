"""The console's printable codes, read back from their PNGs as a door's camera would and checked as a door checks
them: a resident's QR credential (one door, once), a provisioning code for a new door, a reset code for an old one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from console_kit import ADMIN, login, make_console, token
from kiosk.capture.qr import decode_qr
from kiosk.config import QrCredentialSettings
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.trust import RootKeys, generate_root, save_root
from kiosk.qrtoken import NonceCache, QrVerifier
from kiosk.sync import keys as keymod

SITE = "elm-court"


@pytest.fixture
def console(tmp_path, broker_pki):
    keys = tmp_path / "keys"
    keys.mkdir()
    backend = keymod.generate(keymod.BACKEND)
    keymod.save_private(keys / "backend.jwks", backend)
    keymod.save_private(keys / "admin.jwks", keymod.generate("admin"))
    root = generate_root()
    save_root(keys / "fleet.jwks", keys / "fleet.pub", root)
    (keys / "devices").mkdir()
    for door in ("door-1", "door-2"):
        keymod.save_public(keys / "devices" / f"{door}.pub.jwks", keymod.generate(f"{SITE}/{door}"))
    extra = (f'[keys]\nadmin_key = "{keys / "admin.jwks"}"\nbackend_key = "{keys / "backend.jwks"}"\n'
             f'fleet_key = "{keys / "fleet.jwks"}"\ndevices = "{keys / "devices"}"\n'
             f'door_broker_url = "mqtts://broker.example.org:8883"\n'
             f'[broker]\nenabled = false\nca_file = "{broker_pki.ca_file}"\n')
    con, app = make_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}", site=SITE, extra=extra)
    con.residents.gallery.upsert_resident(__import__("kiosk.gallery.store", fromlist=["Resident"]).Resident(
        "r-ada", "Ada"))
    yield con, app, backend, RootKeys.load(keys / "fleet.pub")
    con.close()


def read_png(data: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    (code,) = decode_qr(image)
    return code.decode("ascii")


def test_a_residents_credential_opens_the_chosen_door_once(console, tmp_path):
    from kiosk.db import open_database

    con, app, backend, _ = console
    c = app.test_client()
    login(c, ADMIN)
    page = c.get("/residents/r-ada").get_data(as_text=True)
    assert "door-1" in page and "door-2" in page
    r = c.post("/residents/r-ada/credential.png", data={"csrf_token": token(page), "door": "door-2", "minutes": "5"})
    assert r.status_code == 200 and r.mimetype == "image/png"
    code = read_png(r.data)
    door2 = QrVerifier(backend.public(), SITE, QrCredentialSettings(), NonceCache(open_database(tmp_path / "d2.db")),
                       device="door-2")
    assert door2.verify(code).resident_id == "r-ada"
    with pytest.raises(Exception, match="used before"):
        door2.verify(code)
    door1 = QrVerifier(backend.public(), SITE, QrCredentialSettings(), NonceCache(open_database(tmp_path / "d1.db")),
                       device="door-1")
    with pytest.raises(Exception, match="another door"):
        door1.verify(code)
    assert con.accounts.audit_log()[0]["action"] == "resident.credential"
    # A door that is not the site's, or a lifetime the doors refuse, is not issued.
    bad = c.post("/residents/r-ada/credential.png", data={"csrf_token": token(page), "door": "door-9", "minutes": "5"})
    assert bad.status_code == 302
    bad = c.post("/residents/r-ada/credential.png", data={"csrf_token": token(page), "door": "door-1", "minutes": "600"})
    assert bad.status_code == 302


def test_a_provisioning_code_and_a_reset_code_verify_against_the_fleet_root(console):
    con, app, backend, roots = console
    c = app.test_client()
    login(c, ADMIN)
    page = c.get("/doors/provision").get_data(as_text=True)
    r = c.post("/doors/provision", data={"csrf_token": token(page), "device": "door-3", "name": "Elm Court",
                                         "address": "1 Elm Court", "lat": "48.85", "lon": "2.35", "radius": "150",
                                         "hours": "24"})
    assert r.status_code == 200 and r.mimetype == "image/png", r.get_data(as_text=True)[:500]
    bundle = bmod.read_bundle(read_png(r.data), roots)
    assert (bundle.site, bundle.device_id, bundle.broker_url) == (SITE, "door-3", "mqtts://broker.example.org:8883")
    assert bundle.backend.signing_kid == backend.signing_kid
    r = c.post("/doors/door-1/reset.png", data={"csrf_token": token(page), "minutes": "30"})
    reset = bmod.read_reset(read_png(r.data), roots)
    assert (reset.site, reset.device_id) == (SITE, "door-1")
    assert c.post("/doors/door-7/reset.png", data={"csrf_token": token(page), "minutes": "30"}).status_code == 404
    actions = [a["action"] for a in con.accounts.audit_log()]
    assert actions[:2] == ["door.reset", "door.provision"]
