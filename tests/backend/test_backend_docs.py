"""The snippets of docs/backend.md and docs/events.md, run as the pages print them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.docs import docs_snippet, sh_lines
from kiosk.admin import main as admin_main
from kiosk.backend.config import parse_ingest_config
from kiosk.backend.store import Incoming, open_store
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import seal

REPO = Path(__file__).resolve().parents[2]


def test_the_joserfc_snippet_opens_an_event_verbatim():
    """A second, independent JOSE library decrypts the JWE and verifies the inner JWS (Ed25519)."""
    device, backend = keymod.generate("elm-court/door-1"), keymod.generate("backend")
    claims = {"event_id": "0190-x", "seq": 7, "site": "elm-court", "device": "door-1", "type": "checkin",
              "resident_id": "r-17", "time": time.time(), "v": 1}
    env = {
        "token": seal(claims, device, backend.public().encryption),
        "backend_private_jwks": json.loads(json.dumps(backend.to_jwks(private=True))),
        "device_public_jwks": json.loads(json.dumps(device.public().to_jwks(private=False))),
    }
    exec(docs_snippet("events-joserfc"), env)  # noqa: S102 - the page's code, as printed
    event = env["event"]
    assert json.loads(event.payload) == claims
    assert event.headers()["alg"] == "Ed25519" and event.headers()["typ"] == "kiosk-event+jwt"
    assert event.headers()["kid"] == device.signing_kid
    # Another door's key does not verify it.
    other = keymod.generate("elm-court/door-2")
    env["device_public_jwks"] = json.loads(json.dumps(other.public().to_jwks(private=False)))
    with pytest.raises(Exception):
        exec(docs_snippet("events-joserfc"), env)  # noqa: S102


def test_the_ingest_toml_snippet_is_a_valid_config():
    cfg = parse_ingest_config(docs_snippet("backend-ingest-toml"), "docs/backend.md")
    assert cfg.broker.url == "mqtts://broker.example.org:8883" and cfg.broker.client_id == "kiosk-ingest-1"
    assert cfg.store_url.startswith("postgresql://") and cfg.store.retention_days == 400
    assert cfg.keys.devices == Path("/etc/kiosk/devices")


def test_the_report_commands_run_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from datetime import datetime
    from zoneinfo import ZoneInfo

    def at(d, h, m):
        return datetime(2026, 3, d, h, m, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()

    with open_store("sqlite:///events.db") as s:
        s.store_batch([Incoming({"event_id": f"e{i}", "seq": i, "site": "elm-court", "device": door, "type": kind,
                                 "resident_id": rid, "time": t, "v": 1}, t + 1)
                       for i, (door, kind, rid, t) in enumerate([
                           ("door-1", "checkin", "R-0042", at(2, 7, 55)), ("door-1", "checkin", "R-0051", at(2, 8, 10)),
                           ("door-2", "checkin", "R-0042", at(2, 18, 40)), ("door-1", "qr", "R-0042", at(2, 12, 5)),
                           ("door-2", "spoof", "R-0051", at(3, 23, 30))], start=1)])
    outputs = []
    for line in sh_lines(docs_snippet("backend-reports")):
        argv = shlex.split(line)
        assert argv[0] == "kiosk-admin"
        assert admin_main(argv[1:]) == 0, line
        outputs.append(capsys.readouterr().out)
    assert "2026-03-02  R-0042    07:55:00  18:40:00  3" in outputs[0]
    assert (tmp_path / "doors.csv").read_text().startswith("door,check_ins")
    assert (tmp_path / "hours.png").read_bytes()[:4] == b"\x89PNG"
    assert "spoof" in outputs[3]
    assert outputs[4].count("elm-court/door-") == 3  # R-0042's three check-ins
    assert "erased 3 stored events" in outputs[5]


@pytest.mark.slow
def test_the_ingest_benchmark_runs_as_printed_on_a_small_fleet(tmp_path):
    argv = shlex.split(sh_lines(docs_snippet("backend-bench"))[0])
    assert argv[0] == "scripts/bench-ingest"
    # The page's command, with smaller sizes after it (the last of an option wins).
    r = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:], "--events", "400", "--devices", "5",
                        "--live-events", "40", "--live-rate", "40", "--json"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    results = json.loads(r.stdout.splitlines()[-1])
    assert {(x["store"], x["processes"]) for x in results} == {("postgresql", 1), ("postgresql", 2), ("sqlite", 1),
                                                                 ("sqlite", 2)}
    for x in results:
        assert x["lost"] == 0 and x["duplicated"] == 0 and x["unexpected"] == 0 and x["events"] == 400
        assert x["backlog_events_per_s"] > 0 and x["latency_p50_ms"] > 0 and x["latency_p99_ms"] >= x["latency_p50_ms"]
    assert "none lost, none duplicated: yes" in r.stdout
