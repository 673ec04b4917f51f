"""The package as pip builds it (PEP 517 from pyproject.toml) and as a kiosk installs it."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from harness.docs import docs_snippet, sh_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build isolation on: the build needs nothing but pyproject.toml's build-system.
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("kiosk-*.whl")
    return whl


def _metadata(whl: Path):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def test_setup_py_is_minimal_and_reads_pyproject():
    """For tools that look for a setup.py: it calls setup() with nothing, so pyproject.toml stays the one source."""
    tree = ast.parse((REPO / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [(c.func.id, c.args, c.keywords) for c in calls] == [("setup", [], [])]
    r = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip().splitlines()[-1] == version


def test_wheel_carries_py_typed_and_the_documented_default_config(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "kiosk/py.typed" in names
        assert z.read("kiosk/defaults/kiosk.toml") == (REPO / "config/kiosk.toml").read_bytes()
        # The back end's documented settings too (kiosk-ingest installed from the wheel, no source tree).
        assert z.read("kiosk/defaults/ingest.toml") == (REPO / "config/ingest.toml").read_bytes()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "kiosk = kiosk.cli:main" in entry_points and "kiosk-admin = kiosk.admin:main" in entry_points


#: What only the door runs: the device extra.
CAMERA_STACK = {"dlib-bin", "face-recognition-models", "opencv-python-headless", "numpy", "pyzbar", "gpiozero"}


def _names(reqs, extra: str | None = None) -> set[str]:
    mine = [r for r in reqs if ("extra ==" not in r if extra is None else f'extra == "{extra}"' in r)]
    return {re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0].lower() for r in mine}


def test_wheel_requirements(wheel):
    reqs = _metadata(wheel).get_all("Requires-Dist")
    plain = {r.split(";")[0].strip() for r in reqs if "extra ==" not in r}
    names = _names(reqs)
    assert any(r.startswith("joserfc>=") for r in plain) and "jwcrypto" not in names  # one JOSE library at runtime
    assert any(r.startswith("jwcrypto>=1.6.1") and 'extra == "test"' in r for r in reqs)  # the tests' second one
    assert "tenacity" not in names  # never imported
    assert not {"matplotlib", "tqdm"} & names  # admin-only
    assert _names(reqs, "admin") == {"matplotlib", "tqdm"}
    assert any(r.startswith("simplejpeg") and 'extra == "picamera2"' in r for r in reqs)
    # The camera stack is the device extra's alone: a server installs without it.
    assert CAMERA_STACK <= _names(reqs, "device") and not CAMERA_STACK & names
    assert not CAMERA_STACK & _names(reqs, "backend")


def test_an_installed_wheel_finds_its_default_config(wheel, tmp_path):
    # Installed on its own (no source tree beside it), the package still has its defaults.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    code = (
        "import kiosk, kiosk.config as c; "
        "print(kiosk.__file__); print(c.DEFAULT_CONFIG_PATH); "
        "print(c.load_config(c.DEFAULT_CONFIG_PATH).device.site)"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    where, default, site = r.stdout.splitlines()
    assert where.startswith(str(target)) and default.startswith(str(target))
    assert Path(default).read_bytes() == (REPO / "config/kiosk.toml").read_bytes()
    assert site == "unprovisioned"


def _admin_without(modules: list[str], *argv: str) -> subprocess.CompletedProcess:
    """kiosk-admin in a Python where the given modules cannot be imported (the admin extra is absent)."""
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    code = f"import sys; {block}; from kiosk.admin import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)


def test_admin_commands_say_plainly_when_the_admin_extra_is_missing(tmp_path):
    r = _admin_without(["tqdm", "matplotlib"], "enroll-dir", str(tmp_path))
    assert r.returncode == 1
    assert "enroll-dir needs tqdm" in r.stderr and "pip install 'kiosk[admin]'" in r.stderr
    assert "Traceback" not in r.stderr
    photos = tmp_path / "photos"
    photos.mkdir()
    r = _admin_without(["matplotlib"], "evaluate", str(photos), "--plot", str(tmp_path / "roc.png"))
    assert r.returncode == 1 and "evaluate needs matplotlib" in r.stderr, r.stderr
    r = _admin_without(["tqdm"], "evaluate-liveness", str(photos))
    assert r.returncode == 1 and "evaluate-liveness needs tqdm" in r.stderr, r.stderr
    # Commands that need neither still work on a kiosk without the extra.
    r = _admin_without(["tqdm", "matplotlib"], "--help")
    assert r.returncode == 0 and "enroll-dir" in r.stdout
    r = _admin_without(["tqdm", "matplotlib"], "keys", "device", "--out", str(tmp_path / "device.jwks"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "device.jwks").is_file()


@pytest.mark.slow
def test_a_server_install_has_no_camera_stack(tmp_path):
    """docs/backend.md's install, in a clean venv: kiosk-ingest and kiosk-admin report work, and no dlib is there."""
    venv = tmp_path / "kiosk-ingest"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing of the test venv
    for command in sh_lines(docs_snippet("backend-install")):
        r = subprocess.run(["bash", "-c", command.replace("/opt/kiosk-ingest", str(venv))], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)  # fmt: skip
        assert r.returncode == 0, f"{command}:\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    assert "usage: kiosk-ingest" in r.stdout
    python = venv / "bin/python"
    for module in ("dlib", "cv2", "numpy", "pyzbar", "gpiozero", "face_recognition_models"):
        r = subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr, (module, r.stderr)
    r = subprocess.run([venv / "bin/kiosk-admin", "report", "--help"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "usage: kiosk-admin report" in r.stdout, r.stderr
    r = subprocess.run([venv / "bin/kiosk-admin", "--help"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "pip install 'kiosk[device]'" in " ".join(r.stdout.split()), r.stderr
    # A report runs (on a new SQLite store).
    store = tmp_path / "events.db"
    r = subprocess.run([venv / "bin/kiosk-admin", "report", "doors", "--store", f"sqlite:///{store}"], env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "Events per door" in r.stdout, r.stderr
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True,
                               text=True).stdout  # fmt: skip
    assert not CAMERA_STACK & {line.split("==")[0].lower() for line in installed.splitlines()}
    assert "psycopg-binary==" in installed.lower()
    # Unpinned, the backend extra resolves to the same packages as the lock (PyPI's newest versions).
    report = tmp_path / "resolved.json"
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report",
                        str(report), f"{REPO}[backend]"], env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    resolved = {canonicalize_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]} - {"kiosk"}
    from test_lock import pins

    assert resolved == set(pins((REPO / "requirements-backend.lock").read_text()))
