"""The house's arrows point down: a lower room never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kiosk

PACKAGE = Path(kiosk.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Every kiosk module a file imports (at the top or inside a function), as dotted names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in found if m == "kiosk" or m.startswith("kiosk.")}


def upward(room: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for module in sorted(imports_of(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    return bad


@pytest.mark.parametrize(
    "room, forbidden",
    [
        ("gallery", ("kiosk.match", "kiosk.daemon", "kiosk.sync", "kiosk.admin", "kiosk.capture", "kiosk.backend",
                     "kiosk.evaluation", "kiosk.bench", "kiosk.cli", "kiosk.console")),
        # Offline tools sit beside the runtime, below the admin commands that run them.
        ("evaluation", ("kiosk.admin", "kiosk.cli", "kiosk.daemon")),
        # The device's side of sync knows nothing of the back end or the admin tools.
        ("sync", ("kiosk.backend", "kiosk.admin", "kiosk.daemon", "kiosk.cli", "kiosk.console")),
        # The back end is below the console that reads its store, and knows no admin command.
        ("backend", ("kiosk.console", "kiosk.admin", "kiosk.daemon", "kiosk.cli", "kiosk.enrollment", "kiosk.match",
                     "kiosk.gallery")),
        # The console sits beside kiosk-admin (sharing the rooms below, not its commands) and runs no door.
        ("console", ("kiosk.admin", "kiosk.daemon", "kiosk.cli", "kiosk.evaluation", "kiosk.bench")),
        # Enrollment at the door is a stage the daemon runs; the back end files proposals without it (no numpy there).
        ("enrollment", ("kiosk.backend", "kiosk.admin", "kiosk.daemon", "kiosk.cli", "kiosk.console")),
    ],
)
def test_no_upward_import(room, forbidden):
    assert upward(room, forbidden) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a gallery module importing the matcher is caught."""
    room = tmp_path / "kiosk" / "gallery"
    room.mkdir(parents=True)
    (room / "bad.py").write_text("from ..match.detect import Face\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "kiosk")
    assert upward("gallery", ("kiosk.match",)) == ["kiosk/gallery/bad.py imports kiosk.match.detect",
                                                    "kiosk/gallery/bad.py imports kiosk.match.detect.Face"]


def test_the_runtime_imports_no_harness():
    """harness/ and tests/ sit beside the kiosk: nothing in the package reaches for them."""
    outside = {"harness", "tests", "conftest", "broker", "postgres", "ingest_kit", "gallery_kit", "fleet"}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(PACKAGE.parent)} imports {n}" for n in names if n.split(".")[0] in outside]
    assert bad == []


def test_kiosk_admin_report_loads_no_face_models():
    """`kiosk-admin report` (a back-end command) builds its parser without importing dlib."""
    import subprocess
    import sys

    code = ("import sys\nfrom kiosk.admin import main\ntry:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('dlib', 'face_recognition_models') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_kiosk_console_serves_without_loading_face_models():
    """The console's pages load no dlib: only an enrolment does (the device stack, docs/console.md)."""
    import subprocess
    import sys

    code = ("import sys\nimport kiosk.console.app, kiosk.console.cli, kiosk.console.service\n"
            "from kiosk.console import pages_residents, pages_doors, pages_checkins, pages_accounts\n"
            "print(sorted(m for m in ('dlib', 'face_recognition_models', 'cv2') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
