"""requirements.lock: one stack, pinned with hashes, wheels only, for a Pi (aarch64) and a PC (x86_64)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from harness.docs import docs_snippet, sh_lines

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
#: A back-end server's packages (docs/backend.md): no camera stack.
BACKEND_LOCK = REPO / "requirements-backend.lock"
CAMERA_STACK = {"dlib-bin", "face-recognition-models", "opencv-python-headless", "numpy", "pyzbar", "gpiozero"}
#: Where the platforms' wheelhouses are kept between runs (scripts/arm64-* use the aarch64 one).
CACHE = Path(os.environ.get("KIOSK_ARM64_CACHE", Path.home() / ".cache/kiosk-arm64"))


def pins(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, hashes) for every requirement of a lock file."""
    out = {}
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        assert m, f"not a pinned requirement with hashes: {line!r}"
        out[canonicalize_name(m.group(1))] = (m.group(2), set(re.findall(r"sha256:([0-9a-f]{64})", m.group(3))))
    return out


def test_every_package_is_pinned_with_hashes():
    locked = pins(LOCK.read_text())
    assert len(locked) >= 20
    assert all(hashes for _, hashes in locked.values())
    # The stack the review asked for: numpy 2 with OpenCV 5, one JOSE library (joserfc >= 1.5), no tenacity,
    # no admin tools.
    assert locked["numpy"][0].startswith("2.") and locked["opencv-python-headless"][0].startswith("5.")
    assert tuple(int(x) for x in locked["joserfc"][0].split(".")[:2]) >= (1, 5) and "jwcrypto" not in locked
    assert not {"tenacity", "matplotlib", "tqdm"} & set(locked)
    assert "simplejpeg" in locked and "face-recognition-models" in locked


def test_the_backend_lock_has_no_camera_stack_and_the_kiosks_versions():
    backend, kiosk = pins(BACKEND_LOCK.read_text()), pins(LOCK.read_text())
    assert all(hashes for _, hashes in backend.values())
    assert "psycopg" in backend and "psycopg-binary" in backend
    assert not CAMERA_STACK & set(backend)
    # What both hold is what the tests run: one version of each package.
    assert {n: v for n, (v, _) in backend.items() if n in kiosk} == {
        n: v for n, (v, _) in kiosk.items() if n in backend}


def _floors(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?>=([^,;\s]+)", req)
        assert m, f"no floor: {req!r}"
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def test_the_floors_are_the_locked_versions():
    """pyproject.toml allows nothing older than what the tests ran (the lock's versions)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    locked = {n: v for n, (v, _) in pins(LOCK.read_text()).items()}
    kiosk = _floors(project["dependencies"] + extras["device"] + extras["picamera2"])
    assert set(CAMERA_STACK) <= set(kiosk)
    assert {n: locked.get(n) for n in kiosk} == kiosk
    backend_locked = {n: v for n, (v, _) in pins(BACKEND_LOCK.read_text()).items()}
    backend = _floors(extras["backend"])
    assert {n: backend_locked.get(n) for n in backend} == backend


def test_the_tests_run_on_the_locked_versions():
    # scripts/bootstrap installs the locks first: CI tests exactly what a kiosk and a server run.
    wrong = {}
    both = pins(LOCK.read_text()) | pins(BACKEND_LOCK.read_text())
    for name, (version, _) in both.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"locked vs installed: {wrong}"


@pytest.mark.slow
def test_the_lock_is_current_with_pyproject(tmp_path):
    """The documented scripts/lock, run on a copy of the tree, changes nothing: pyproject.toml and the lock agree."""
    if shutil.which("uv", path=str(Path(sys.executable).parent)) is None and shutil.which("uv") is None:
        pytest.skip("uv is not installed (scripts/bootstrap installs it)")
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for f in ("pyproject.toml", "requirements.lock", "requirements-backend.lock", "scripts/lock", "scripts/wheelhouse"):
        shutil.copy2(REPO / f, tree / f)
    (tree / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (command,) = sh_lines(docs_snippet("appliance-lock"))
    r = subprocess.run(["bash", "-c", command], cwd=tree, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote requirements.lock" in r.stdout
    for lock in (LOCK, BACKEND_LOCK):
        assert {n: v for n, (v, _) in pins((tree / lock.name).read_text()).items()} == {
            n: v for n, (v, _) in pins(lock.read_text()).items()
        }, "pyproject.toml changed: run scripts/lock"


def _supported(platform: str) -> set[str]:
    """The wheel tags pip on Bookworm (glibc 2.36, CPython 3.11) accepts on that machine."""
    plats = [f"manylinux_2_{minor}_{platform}" for minor in range(36, 16, -1)] + [f"manylinux2014_{platform}"]
    plats += ["linux_" + platform]
    tags = list(cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=plats))
    tags += list(compatible_tags((3, 11), "cp311", plats))
    return {str(t) for t in tags}


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["aarch64", "x86_64"])
def test_the_lock_resolves_to_wheels_only(platform):
    """pip, in --require-hashes mode, finds a wheel with a locked hash for every package; nothing is built."""
    # The documented command, in a folder whose "wheelhouse" is the cached one.
    house = CACHE / f"wheelhouse-{platform}"
    house.mkdir(parents=True, exist_ok=True)
    run_in = CACHE / f"run-{platform}"
    run_in.mkdir(exist_ok=True)
    for name, target in (("scripts", REPO / "scripts"), ("requirements.lock", LOCK), ("wheelhouse", house)):
        link = run_in / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    (command,) = sh_lines(docs_snippet("appliance-wheelhouse"))
    command = command.replace("--platform aarch64", f"--platform {platform}")
    r = subprocess.run(["bash", "-c", command], cwd=run_in, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    locked = pins(LOCK.read_text())
    supported = _supported(platform)
    found: dict[str, Path] = {}
    for f in house.iterdir():
        assert f.suffix == ".whl", f"not a wheel: {f.name}"
        name, version, _, tags = parse_wheel_filename(f.name)
        if name not in locked:
            continue  # an older wheel left in the cache
        if str(version) != locked[name][0]:
            continue
        assert {str(t) for t in tags} & supported, f"{f.name} does not install on {platform}"
        found[name] = f
    assert set(found) == set(locked), f"no wheel for {set(locked) - set(found)}"
    for name, f in found.items():
        digest = subprocess.run(["sha256sum", str(f)], capture_output=True, text=True).stdout.split()[0]
        assert digest in locked[name][1], f"{f.name}: hash not in the lock"
