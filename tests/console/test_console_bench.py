"""``scripts/bench-console`` on a small store: it fills, serves, fetches every page and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_console_benchmark_runs_small():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench-console"), "--residents", "60", "--events",
                        "3000", "--repeat", "2"], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode in (0, 1), r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert out[0] == "60 residents, 3,000 events in PostgreSQL; 2 fetches per page"
    pages = [line.split()[0] for line in out[2:-1]]
    assert {"/", "/residents/", "/doors/", "/checkins/today", "/reports/daily", "/reports/spoofs.png"} <= set(pages)
    assert out[-1].startswith("every page p95 <= 300 ms: ")
