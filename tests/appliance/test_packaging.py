"""The package as pip builds it (PEP 517 from pyproject.toml) and as a kiosk installs it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

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


def test_no_legacy_setup_py():
    assert (REPO / "pyproject.toml").is_file()
    assert not (REPO / "setup.py").exists()


def test_wheel_carries_py_typed_and_the_documented_default_config(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "kiosk/py.typed" in names
        assert z.read("kiosk/defaults/kiosk.toml") == (REPO / "config/kiosk.toml").read_bytes()
        # The back end's documented settings too (kiosk-ingest installed from the wheel, no source tree).
        assert z.read("kiosk/defaults/ingest.toml") == (REPO / "config/ingest.toml").read_bytes()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "kiosk = kiosk.cli:main" in entry_points and "kiosk-admin = kiosk.admin:main" in entry_points


def test_wheel_requirements(wheel):
    reqs = _metadata(wheel).get_all("Requires-Dist")
    plain = {r.split(";")[0].strip() for r in reqs if "extra ==" not in r}
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in plain}
    assert "jwcrypto>=1.5.7" in plain  # 1.5.6 cannot sign with the Ed25519 alg name
    assert "tenacity" not in names  # never imported
    assert not {"matplotlib", "tqdm"} & names  # admin-only
    admin = {r.split(";")[0].split(">")[0].strip() for r in reqs if 'extra == "admin"' in r}
    assert admin == {"matplotlib", "tqdm"}
    assert any(r.startswith("simplejpeg") and 'extra == "picamera2"' in r for r in reqs)


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
