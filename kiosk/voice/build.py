"""Make the voice prompts: one WAV file per :class:`~kiosk.prompts.Prompt`, spoken by espeak-ng.

Run at build time (``scripts/voice``), never on the door's hot path. The
words are :data:`kiosk.prompts.TEXTS`, the screen's own; ``language`` is the
espeak-ng voice that speaks them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import KioskError
from ..prompts import TEXTS, Prompt
from .player import wav_path


def make_prompts(folder: Path, language: str = "en", *, espeak: str = "espeak-ng", speed: int = 150) -> list[Path]:
    """Write ``FOLDER/<prompt>.wav`` for every prompt; the files written."""
    exe = shutil.which(espeak)
    if exe is None:
        raise KioskError(f"{espeak} is not installed (apt-get install espeak-ng)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for prompt in Prompt:
        out = wav_path(folder, prompt)
        r = subprocess.run([exe, "-v", language, "-s", str(speed), "-w", str(out), TEXTS[prompt]],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            raise KioskError(f"{espeak} -v {language} made no audio for {prompt.value}: {r.stderr.strip()}")
        written.append(out)
    return written
