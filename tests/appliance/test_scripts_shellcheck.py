"""Every shell script in scripts/ is shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def shell_scripts() -> list[Path]:
    out = []
    for p in sorted(SCRIPTS.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts:
            continue
        first = p.open("rb").readline()
        if p.suffix in (".sh", ".bash") or (first.startswith(b"#!") and (b"sh" in first.split(b"/")[-1])):
            out.append(p)
    return out


def test_the_scripts_we_ship_are_found():
    names = {p.name for p in shell_scripts()}
    assert {"bootstrap", "install.sh", "build-image.sh"} <= names, names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_shellcheck_clean(script):
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap installs it)")
    r = subprocess.run([exe, "--external-sources", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
