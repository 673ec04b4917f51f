"""The baseline's own pinned stack (requirements-baseline.txt), made importable.

face_recognition_models imports ``pkg_resources``, which the setuptools of the
kiosk's venv (81 and later) no longer has. scripts/bootstrap installs
face_recognition, Pillow and a setuptools that has it into VENV/baseline. That
folder goes at the end of ``sys.path``: the kiosk's own packages (numpy, dlib,
the models) come first, and the baseline only adds what they lack.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def baseline_dir() -> Path:
    return Path(sys.prefix) / "baseline"


def use_baseline_stack() -> Path:
    target = baseline_dir()
    if not (target / "pkg_resources").is_dir():
        raise SystemExit(f"scripts/bench: the baseline's stack is not installed in {target}: run scripts/bootstrap")
    if str(target) not in sys.path:
        sys.path.append(str(target))
    # Said once per run by face_recognition_models; the pin is the answer to it.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    return target
