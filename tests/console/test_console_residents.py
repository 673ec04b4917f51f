"""Residents and reports through the console (Flask's test client): enrol from real photos, refusals with the
quality gates' reasons, name and dates, erasure of stored check-ins, and the attendance report's numbers equal
``kiosk-admin report``'s."""

from __future__ import annotations

import csv
import io

import pytest

from console_kit import ADMIN, VIEWER, login, make_console, token
from kiosk.admin import main as admin_main
from kiosk.backend.store import Incoming

TRAIN = "faces/face_recognition/examples/knn_examples/train"


@pytest.fixture
def console(tmp_path):
    console, app = make_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}")
    yield console, app
    console.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def reports_console(request, tmp_path):
    """A console on either store: the reports are counted in SQL, each dialect its own way."""
    url = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    console, app = make_console(tmp_path, url)
    yield console, app
    console.close()


def photo(test_data, rel: str):
    p = test_data / rel
    return (io.BytesIO(p.read_bytes()), p.name)


def test_enrol_from_photos_refuses_bad_ones_with_the_gates_reason_and_keeps_no_photo(console, test_data, tmp_path):
    con, app = console
    c = app.test_client()
    login(c, ADMIN)
    csrf = token(c.get("/residents/new").get_data(as_text=True))
    r = c.post("/residents/new", content_type="multipart/form-data", follow_redirects=True, data={
        "csrf_token": csrf, "resident_id": "r-biden", "name": "Joe B.",
        "photos": [photo(test_data, f"{TRAIN}/biden/biden.jpg"), photo(test_data, f"{TRAIN}/biden/biden2.jpg"),
                   photo(test_data, "faces/face_recognition/examples/two_people.jpg")]})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Joe B." in page
    assert "Refused 1 photo(s), more than one face" in page and "[several_faces]: two_people.jpg" in page
    row = con.residents.get("r-biden")
    assert row.name == "Joe B." and row.templates == 2
    # No photo anywhere under the console's folders: only templates and hashes in the database.
    kept = [p for p in tmp_path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert kept == []
    assert [a["action"] for a in con.accounts.audit_log()][0] == "resident.enroll"
    # Search by a part of the name, case-insensitive.
    assert "r-biden" in c.get("/residents/?q=joe").get_data(as_text=True)
    assert "r-biden" not in c.get("/residents/?q=obama").get_data(as_text=True)


def test_nobody_is_enrolled_when_every_photo_is_refused(console, test_data):
    _, app = console
    c = app.test_client()
    login(c, ADMIN)
    csrf = token(c.get("/residents/new").get_data(as_text=True))
    r = c.post("/residents/new", content_type="multipart/form-data", data={
        "csrf_token": csrf, "resident_id": "r-x", "name": "X",
        "photos": [photo(test_data, "faces/face_recognition/examples/two_people.jpg"),
                   (io.BytesIO(b"not a jpeg"), "broken.jpg")]})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "[unreadable]" in page and "[several_faces]" in page


def _store_checkins(store, rid: str, times):
    store.store_batch([Incoming({"event_id": f"e{i}", "seq": i, "site": "elm-court", "device": "door-1",
                                 "type": "checkin", "outcome": "ACCEPTED", "method": "face", "resident_id": rid,
                                 "time": t, "v": 1}, received_at=t + 1) for i, t in enumerate(times, start=1)])


def test_name_dates_and_erasure_of_the_gallery_entry_and_every_stored_checkin(console, enrolled_state, tmp_path):
    import shutil

    con, app = console
    con.residents.close()
    shutil.rmtree(tmp_path / "gallery")
    shutil.copytree(enrolled_state, tmp_path / "gallery")  # residents enrolled by kiosk-admin, as a site has them
    from kiosk.console.residents import Residents

    con.residents = Residents(con.config.kiosk_config())
    _store_checkins(con.store, "obama", [1.78e9, 1.78e9 + 3600])
    c = app.test_client()
    login(c, ADMIN)
    page = c.get("/residents/obama").get_data(as_text=True)
    # A name no gallery update can carry (a new line, pasted) is refused on the page: stored, it would stop every
    # later update of the site, erasures too.
    r = c.post("/residents/obama/edit", data={"csrf_token": token(page), "name": "Barack\nObama",
                                              "valid_from": "2026-01-01", "valid_until": "2026-12-31"},
               follow_redirects=True)
    assert "none of them a control character" in r.get_data(as_text=True)
    assert con.residents.get("obama").name == "obama"
    r = c.post("/residents/obama/edit", data={"csrf_token": token(page), "name": "Barack",
                                              "valid_from": "2026-01-01", "valid_until": "2026-12-31"})
    assert r.status_code == 302
    row = con.residents.get("obama")
    assert row.name == "Barack" and row.valid_from < row.valid_until
    assert "Barack" in c.get("/residents/obama/history").get_data(as_text=True)
    # Erase: one confirmation page, one POST.
    page = c.get("/residents/obama/erase").get_data(as_text=True)
    assert "cannot be undone" in page
    assert c.post("/residents/obama/erase", data={"csrf_token": token(page)}).status_code == 200  # not confirmed
    assert con.residents.get("obama") is not None
    r = c.post("/residents/obama/erase", data={"csrf_token": token(page), "confirm": "y"}, follow_redirects=True)
    assert "Erased, with 2 stored check-in record(s)" in r.get_data(as_text=True)
    assert con.residents.get("obama") is None
    assert list(con.store.events(resident_id="obama")) == []
    _store_checkins(con.store, "obama", [1.78e9])  # a redelivery of an erased check-in stays out
    assert list(con.store.events(resident_id="obama")) == []
    audit = con.accounts.audit_log()
    assert audit[0]["action"] == "resident.erase" and audit[0]["actor"] == ADMIN and audit[0]["remote"] == "127.0.0.1"
    # Who erased someone stays; whom does not (the update before it names the same keyed hash).
    assert audit[0]["target"].startswith("erased:") and audit[1]["target"] == audit[0]["target"]
    assert not [a for a in audit if "obama" in a["target"] + a["detail"]]
    assert "obama" not in c.get("/residents/").get_data(as_text=True)


def test_the_attendance_csv_equals_kiosk_admin_reports(reports_console, capsys):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    con, app = reports_console
    tz = ZoneInfo("America/New_York")
    times = [datetime(2026, 3, d, h, m, tzinfo=tz).timestamp() for d, h, m in
             [(2, 7, 55), (2, 18, 40), (3, 0, 30), (3, 23, 59), (4, 12, 0), (6, 9, 0)]]
    _store_checkins(con.store, "r-ada", times)
    c = app.test_client()
    login(c, VIEWER)  # reading is for viewers too
    r = c.get("/reports/daily?from=2026-03-02&to=2026-03-04&tz=America/New_York&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    ours = r.get_data(as_text=True)
    assert admin_main(["report", "daily", "--store", con.config.store_url, "--since", "2026-03-02",
                       "--until", "2026-03-05", "--tz", "America/New_York", "--format", "csv"]) == 0
    theirs = capsys.readouterr().out
    assert ours == theirs
    rows = list(csv.DictReader(io.StringIO(ours)))
    assert [(x["day"], x["first"], x["last"], x["check_ins"]) for x in rows] == [
        ("2026-03-02", "07:55:00", "18:40:00", "2"), ("2026-03-03", "00:30:00", "23:59:00", "2"),
        ("2026-03-04", "12:00:00", "12:00:00", "1")]
    page = c.get("/reports/daily?from=2026-03-02&to=2026-03-04&tz=America/New_York").get_data(as_text=True)
    assert "07:55:00" in page and "Export CSV" in page
    assert c.get("/reports/daily?from=2026-03-05&to=2026-03-01").status_code == 400


def test_refusal_charts_are_pngs_and_today_feeds_the_live_update(console):
    import time

    con, app = console
    now = time.time()
    con.store.store_batch([Incoming({"event_id": f"s{i}", "seq": i, "site": "elm-court", "device": "door-2",
                                     "type": kind, "outcome": kind.upper(), "method": "face", "resident_id": None,
                                     "time": now - 60 * i, "v": 1}, received_at=now)
                           for i, kind in enumerate(["spoof", "unknown", "spoof"], start=1)])
    _store_checkins(con.store, "r-ada", [now - 5])
    c = app.test_client()
    login(c, VIEWER)
    page = c.get("/reports/refusals").get_data(as_text=True)
    assert "refusals.png" in page and "spoofs.png" in page and "spoof" in page
    png = c.get("/reports/spoofs.png")
    assert png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    feed = c.get(f"/checkins/today.json?after={now - 3600}").get_json()
    assert [e["resident"] for e in feed] == ["r-ada"]
    assert c.get(f"/checkins/today.json?after={now}").get_json() == []
    assert "r-ada" in c.get("/checkins/today").get_data(as_text=True)
    # A check-in that names nobody (the format lets a door leave resident_id out): shown, not a broken page.
    con.store.store_batch([Incoming({"event_id": "q1", "seq": 9, "site": "elm-court", "device": "door-2",
                                     "type": "qr", "outcome": "ACCEPTED", "method": "qr", "time": now - 2, "v": 1},
                                    received_at=now)])
    r = c.get("/checkins/today")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "r-ada" in page and "elm-court/door-2" in page
    assert [e["resident"] for e in c.get(f"/checkins/today.json?after={now - 3600}").get_json()] == [None, "r-ada"]


def test_the_attendance_page_shows_a_page_of_rows_and_the_csv_has_them_all(reports_console):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    con, app = reports_console
    t = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    con.store.store_batch([Incoming({"event_id": f"p{i}", "seq": i, "site": "elm-court", "device": "door-1",
                                     "type": "checkin", "outcome": "ACCEPTED", "method": "face",
                                     "resident_id": f"r-{i:04d}", "time": t + i, "v": 1}, received_at=t)
                           for i in range(1, 251)])
    c = app.test_client()
    login(c, VIEWER)
    page = c.get("/reports/daily?from=2026-03-02&to=2026-03-02&tz=UTC").get_data(as_text=True)
    assert "250 rows; page 1 of 2" in page and "r-0200" in page and "r-0201" not in page
    page2 = c.get("/reports/daily?from=2026-03-02&to=2026-03-02&tz=UTC&page=2").get_data(as_text=True)
    assert "r-0201" in page2 and "r-0250" in page2
    rows = c.get("/reports/daily?from=2026-03-02&to=2026-03-02&tz=UTC&format=csv").get_data(as_text=True)
    assert len(rows.splitlines()) == 251


def test_a_chart_is_drawn_once_for_the_same_counts(monkeypatch):
    from kiosk.console import charts

    series = {"elm-court/door-1": [h % 3 for h in range(24)]}
    first = charts.heatmap_png("Spoofs", series)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = []
    real = charts._draw
    monkeypatch.setattr(charts, "_draw", lambda *a: drawn.append(a) or real(*a))
    assert charts.heatmap_png("Spoofs", series) is first and drawn == []
    assert charts.heatmap_png("Spoofs", {"elm-court/door-1": [1] * 24}) != first and len(drawn) == 1


def test_a_kept_report_follows_new_and_erased_events(console):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    con, app = console
    t = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    _store_checkins(con.store, "r-ada", [t])
    c = app.test_client()
    login(c, VIEWER)
    url = "/reports/daily?from=2026-03-02&to=2026-03-02&tz=UTC&format=csv"
    assert c.get(url).get_data(as_text=True).count("r-ada") == 1
    assert c.get(url).get_data(as_text=True).count("r-ada") == 1  # kept
    con.store.store_batch([Incoming({"event_id": "late", "seq": 99, "site": "elm-court", "device": "door-2",
                                     "type": "checkin", "outcome": "ACCEPTED", "method": "face",
                                     "resident_id": "r-bob", "time": t + 60, "v": 1}, received_at=t + 90)])
    assert "r-bob" in c.get(url).get_data(as_text=True)  # a late event: made again
    con.store.erase_resident("r-ada")
    assert "r-ada" not in c.get(url).get_data(as_text=True)  # an erasure: made again
