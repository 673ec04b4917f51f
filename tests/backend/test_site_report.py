"""``kiosk-admin report site``: a site's strangers against the calibration, on event streams the door's own code
commits from real gaps (real descriptors), stored in SQLite and PostgreSQL (and once through the broker and
kiosk-ingest): a crowded site is warned about and offered a stricter target, a normal one is not, too few visits
say so; the bound, the minimum number of visits, residents turned away."""

from __future__ import annotations

import csv
import io
import random
import time

import pytest
from realgaps import gaps, lookalikes, point
from site_streams import door_events, in_force, incoming

from kiosk import siteestimate as se
from kiosk.admin import main
from kiosk.backend.store import open_store

pytestmark = pytest.mark.slow

DELTA = se.DEFAULT_DELTA
NOW = time.time()
DAY = 86400.0


def expected() -> float:
    return se.expected_share(se.point_for(se.load_points(), in_force().threshold)["near_miss"], DELTA)


def pools() -> tuple[list, list, list]:
    """Real strangers' gaps near the threshold and far from it, and residents' gaps that fell short."""
    strangers = gaps(point())
    near = [g for g in strangers if g is not None and 0 < g <= DELTA]
    far = [g for g in strangers if g is None or g > DELTA]
    residents = [g for g in gaps(point(), mated=True) if g is not None and 0 < g <= DELTA]
    assert near and far and residents
    return near, far, residents


def stream(n: int, crowding: float, seed: int) -> list:
    """``n`` stranger visits whose near misses are ``crowding`` times what the calibration expected."""
    near, far = pools()[:2]
    k = round(n * expected() * crowding)
    rng = random.Random(seed)
    gaps_ = [rng.choice(near) for _ in range(k)] + [rng.choice(far) for _ in range(n - k)]
    rng.shuffle(gaps_)
    return gaps_


@pytest.fixture
def site_store(store_url, tmp_path):
    need = se.min_visits(expected())
    retries = pools()[2][:30]
    with open_store(store_url) as s:
        for site, device, gaps_, residents, back in (
            ("elm-court", "door-1", stream(2 * need, 1.0, 1), 40, retries),
            ("elm-court", "door-2", stream(need, 1.0, 2), 10, ()),
            ("oak-row", "door-1", stream(3 * need, 4.0, 3), 20, ()),
            ("ash-lane", "door-1", stream(need // 2, 4.0, 4), 0, ()),
        ):
            s.store_batch(incoming(door_events(tmp_path, site, device, strangers=gaps_, residents=residents,
                                               retries=back, start=NOW - 20 * DAY, step=60.0)))
        # Long ago, outside the rolling window: a crowd of near misses that must not count.
        s.store_batch(incoming(door_events(tmp_path, "elm-court", "door-3", strangers=pools()[0] * 3,
                                           start=NOW - 60 * DAY)))
    return store_url


def report(capsys, url, *args, err: bool = False):
    capsys.readouterr()
    code = main(["report", "site", "--store", url, *args])
    got = capsys.readouterr()
    return (code, got.out, got.err) if err else (code, got.out)


def rows(text: str) -> dict[str, dict]:
    return {r["scope"]: r for r in csv.DictReader(io.StringIO(text))}


def test_a_crowded_site_is_warned_about_and_offered_a_stricter_target_a_normal_one_is_not(site_store, capsys):
    need = se.min_visits(expected())
    code, out, journal = report(capsys, site_store, "--format", "csv", err=True)
    assert code == 0
    r = rows(out)
    oak, elm, ash = r["oak-row"], r["elm-court"], r["ash-lane"]
    assert oak["status"] == "CROWDED" and int(oak["strangers"]) == 3 * need
    assert float(oak["ratio"]) == pytest.approx(4.0, rel=0.15)
    assert 0 < float(oak["suggest_target"]) < 0.001
    # The normal site, every door of it, and the estimate per door.
    assert elm["status"] == "ok" and r["elm-court/door-1"]["status"] == "ok" and "elm-court/door-3" not in r
    assert int(elm["strangers"]) == 3 * need and float(elm["ratio"]) == pytest.approx(1.0, rel=0.15)
    assert elm["suggest_target"] == ""
    # Too few strangers to say anything, however close they come.
    assert ash["status"] == "too few" and int(ash["strangers"]) < int(ash["min_strangers"]) == need
    logged = [line for line in journal.splitlines() if "crowd" in line]
    assert len(logged) == 2 and all("oak-row" in line and "WARNING" in line for line in logged)  # the site and its door
    assert not any("None" in line for line in logged)  # no tail to fit at oak-row: said so, not "None"
    code, text = report(capsys, site_store)
    warnings = [line for line in text.splitlines() if line.startswith("WARNING")]
    assert [w.split(":")[0] for w in warnings] == ["WARNING oak-row", "WARNING oak-row/door-1"]
    assert f"kiosk-admin gallery match --site oak-row --fpir-target {float(oak['suggest_target']):g}" in warnings[0]
    # For monitoring: --check fails on a crowded site only.
    assert report(capsys, site_store, "--check")[0] == 3
    assert report(capsys, site_store, "--check", "--site", "elm-court")[0] == 0


def test_a_site_whose_look_alikes_pass_the_threshold_is_bounded_by_its_tail_and_warned(store_url, tmp_path, capsys):
    # Real strangers and a few look-alikes (real residents' gaps, realgaps.SHIFT less alike): 5 to 10 times the
    # target of them get in, while the band before the threshold holds fewer near misses than the calibration
    # expected (crowding under 1).
    strangers = lookalikes(20_000, 300, 1)
    true = sum(g <= 0 for g in strangers if g is not None) / len(strangers)
    seen = [g for g in strangers if g is None or g > 0]  # those accepted check in: never seen as strangers
    with open_store(store_url) as s:
        s.store_batch(incoming(door_events(tmp_path, "pine-close", "door-1", strangers=seen, start=NOW - 20 * DAY,
                                           step=60.0)))
    code, out = report(capsys, store_url, "--format", "csv")
    pine = rows(out)["pine-close"]
    pct = lambda x: float(x.rstrip("%")) / 100  # noqa: E731
    target = in_force().fpir_target
    assert code == 0 and 5 * target < true < 10 * target and float(pine["ratio_upper95"]) < 1
    assert pine["status"] == "CROWDED" and pct(pine["fpir_lower95"]) < true <= pct(pine["fpir_upper95"])
    assert pct(pine["fpir_calibrated"]) * float(pine["ratio_upper95"]) < true / 5  # the crowding scaled: far under
    assert 0 < float(pine["suggest_target"]) < target
    warning = next(line for line in report(capsys, store_url)[1].splitlines() if line.startswith("WARNING pine-close:"))
    assert "the site's FPIR is over its target" in warning


def test_residents_retrying_are_turned_away_residents_not_strangers(site_store, capsys):
    r = rows(report(capsys, site_store, "--format", "csv", "--site", "elm-court")[1])
    door = r["elm-court/door-1"]
    n = len(pools()[2][:30])  # residents' visits that fell short, each retried with the QR credential
    assert n >= 10 and (int(door["turned_away"]), int(door["resident_visits"])) == (n, 40 + n)
    assert float(door["fnir_site"].rstrip("%")) == pytest.approx(100 * n / (40 + n), rel=1e-2)
    assert float(door["fnir_upper95"].rstrip("%")) > float(door["fnir_site"].rstrip("%"))
    # Counted as strangers, the residents' near misses would have made the normal site look crowded.
    with open_store(site_store) as s:
        events = list(s.events(site="elm-court", device="door-1", since=NOW - 30 * DAY, claims=True))
    as_strangers = [se.Visit(e["claims"]["gap"], e["claims"]["threshold"]) for e in events if e["type"] == "unknown"]
    assert se.estimate(as_strangers, se.load_points()).crowded
    assert not se.estimate(se.split(events).strangers, se.load_points()).crowded


def test_the_rolling_window(site_store, capsys):
    r = rows(report(capsys, site_store, "--format", "csv", "--days", "90")[1])
    assert "elm-court/door-3" in r  # 60 days old: inside 90 days, not inside the default 30


def test_site_claims_go_through_the_broker_and_kiosk_ingest_which_checks_them(rig, tmp_path, capsys):
    door = "door-2"
    claims = door_events(tmp_path, rig.fleet.site, door, strangers=[0.05, 0.3, None], residents=1, retries=[0.02],
                         start=NOW - DAY)
    for c in claims:
        rig.publish(door, rig.sealed(door, c))
    assert rig.wait_stored(claims[-1]["event_id"])
    r = rows(report(capsys, rig.url, "--format", "csv")[1])[f"{rig.fleet.site}/{door}"]
    assert (int(r["strangers"]), int(r["near"]), int(r["turned_away"]), int(r["resident_visits"])) == (3, 1, 1, 2)
    # The back end checks the site claims' types like any other: a gap as text is refused.
    bad = rig.claims(door, type="unknown", outcome="UNKNOWN", resident_id=None, gap="0.05", threshold=0.47)
    refused = rig.wait_refused(rig.publish(door, rig.sealed(door, bad)))
    assert refused and refused[0]["reason"] == "bad_claims" and "gap" in refused[0]["detail"]


def test_the_pages_commands_run_as_printed(tmp_path, monkeypatch, capsys):
    import shlex

    from harness.docs import docs_snippet, sh_lines

    monkeypatch.chdir(tmp_path)
    need = se.min_visits(expected())
    with open_store("sqlite:///events.db") as s:
        for site, gaps_ in (("elm-court", stream(need, 1.0, 5)), ("oak-row", stream(2 * need, 4.0, 6))):
            s.store_batch(incoming(door_events(tmp_path, site, "door-1", strangers=gaps_, start=NOW - 5 * DAY)))
    outputs = []
    for line in sh_lines(docs_snippet("backend-site-report")):
        argv = shlex.split(line)
        assert argv[0] == "kiosk-admin"
        outputs.append((main(argv[1:]), capsys.readouterr().out))
    assert outputs[0][0] == 0 and "WARNING oak-row:" in outputs[0][1] and "CROWDED" in outputs[0][1]
    assert outputs[1][0] == 0  # --check: elm-court is not crowded
    assert rows((tmp_path / "site.csv").read_text())["elm-court"]["status"] == "ok"
