"""A stricter match target as a signed gallery-update field, through a real broker to a running kiosk: applied
only if it is at least as strict as the device's own, kept; a looser or an unsigned one is refused and reported,
nothing changed. ``kiosk-admin gallery match`` plans the update that carries it."""

from __future__ import annotations

import json

import pytest

from harness.gallery_kit import Admin, KioskSite
from harness.polling import wait_for
from kiosk.admin import main as admin_main
from kiosk.gallery.store import open_store
from kiosk.errors import ConfigError
from kiosk.sync import keys as keymod

pytestmark = pytest.mark.slow


@pytest.fixture
def site(broker, tmp_path):
    s = KioskSite(broker, tmp_path)
    yield s
    s.close()


def state(site: KioskSite) -> tuple:
    p = site.kiosk.recognizer.point
    store = open_store(site.config)
    try:
        cap = store.fpir_cap()
    finally:
        store.db.close()
    return site.snapshot(), (p.fpir_target, p.threshold, p.visit_threshold), cap


def status(site: KioskSite) -> dict:
    """The retained status the door publishes next."""
    n = len(site.probe.messages)
    site.kiosk.publisher.request_status()
    assert wait_for(lambda: any(t == site.status_topic for t, _, _ in site.probe.messages[n:]), 10)
    return json.loads([p for t, p, _ in site.probe.messages[n:] if t == site.status_topic][-1])


def test_a_stricter_target_is_applied_a_looser_or_unsigned_one_refused(site):
    site.apply_good(12)  # 12 residents: the calibrated point for 30
    before = state(site)
    assert before[1][0] == 0.001 and before[2] is None

    looser = site.send(site.frames(site.claims(ops=[], match={"fpir_target": 0.002})))
    assert (looser["result"], looser["reason"]) == ("refused", "looser_match")
    assert state(site) == before

    stranger = Admin()  # an admin key the device does not pin
    forged = site.claims(ops=[], match={"fpir_target": 0.0003})
    refused = site.send(stranger.frames(forged, site.keys))
    assert refused["result"] == "refused" and refused["reason"] in ("unknown_signer", "bad_signature")
    assert state(site) == before

    applied = site.send(site.frames(site.claims(ops=[], match={"fpir_target": 0.0003})))
    assert applied["result"] == "applied"
    after = state(site)
    assert after[1][0] == 0.0003 and after[1][1] < before[1][1] and after[1][2] <= before[1][2]
    assert after[2] == 0.0003  # kept in the device's database: a restart keeps it
    assert status(site)["recognition"]["fpir_target"] == 0.0003

    # The device's own target is now looser than what it holds: refused too.
    again = site.send(site.frames(site.claims(ops=[], match={"fpir_target": 0.001})))
    assert (again["result"], again["reason"]) == ("refused", "looser_match")
    assert state(site)[1:] == after[1:]


def test_gallery_match_as_the_page_prints_it_plans_a_version_that_carries_the_target(resident_state, tmp_path,
                                                                                     monkeypatch, capsys):
    import shlex
    import shutil

    from harness.docs import docs_snippet, sh_lines

    monkeypatch.chdir(tmp_path)
    keymod.save_private(tmp_path / "admin.jwks", keymod.generate("admin"))
    keymod.save_public(tmp_path / "door-1.pub.jwks", keymod.generate("elm-court/door-1"))
    shutil.copytree(resident_state, tmp_path / "admin-state")
    (line,) = sh_lines(docs_snippet("recognition-gallery-match"))
    argv = shlex.split(line)
    assert argv[:3] == ["kiosk-admin", "gallery", "match"] and "--dry-run" in argv
    assert admin_main(argv[1:]) == 0
    assert "match target 0.0003" in capsys.readouterr().out
    # publish plans the same residents without it; a target that is not a rate is refused.
    assert admin_main([*argv[1:2], "publish", *[a for a in argv[3:] if a not in ("--fpir-target", "0.0003")]]) == 0
    assert "match target" not in capsys.readouterr().out
    assert admin_main([*argv[1:], "--fpir-target", "1.5"]) == ConfigError.exit_status
    assert "a rate above 0 and at most 1" in capsys.readouterr().err
