"""Speak a prompt through ALSA: ``aplay`` in the background, one at a time, the newest wins.

The player is a door panel like the GPIO one (``show``/``error``/``clear``/
``close``). It never blocks the match loop: the player runs as a child
process, and a new prompt stops the one still playing. Nothing is said in
the configured quiet hours (local time).
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from pathlib import Path
from typing import Callable

from ..config import VoiceSettings
from ..match.decide import Decision
from ..prompts import Prompt, for_decision

log = logging.getLogger(__name__)


def quiet_at(hours: str, t: dt.time) -> bool:
    """Whether ``t`` falls in ``hours`` ("22:00-07:00", across midnight when the end is earlier; "" never)."""
    if not hours:
        return False
    start, end = (dt.time.fromisoformat(x) for x in hours.split("-"))
    return start <= t < end if start < end else (t >= start or t < end)


def wav_path(folder: Path, prompt: Prompt) -> Path:
    """Where the prompt's audio file is: ``FOLDER/<prompt value>.wav``."""
    return Path(folder) / f"{prompt.value}.wav"


class VoicePanel:
    """Spoken prompts, from ``[voice]``.

    :param now: local wall time (a fixed clock in tests).
    """

    motion_sensor = None

    def __init__(self, settings: VoiceSettings, *, now: Callable[[], dt.datetime] = dt.datetime.now):
        self.settings = settings
        self._now = now
        self._playing: tuple[Prompt, subprocess.Popen] | None = None
        self._unprovisioned = False
        self._missing: set[Prompt] = set()
        self._closed = False
        self.spoken: list[Prompt] = []  # what was handed to the player (for the status and tests)

    # -- the panel's calls -------------------------------------------------------

    def show(self, decision: Decision) -> None:
        self.say(for_decision(decision))

    def error(self) -> None:
        self.say(Prompt.CODE_REFUSED if self._unprovisioned else Prompt.OUT_OF_SERVICE)

    def clear(self) -> None:
        pass  # a prompt is short: it ends by itself

    def door(self, *, unprovisioned: bool | None = None, **_) -> None:
        if unprovisioned is not None and unprovisioned != self._unprovisioned:
            self._unprovisioned = unprovisioned
            if unprovisioned:
                self.say(Prompt.UNPROVISIONED)

    def close(self) -> None:
        """Stop what is playing. Safe to call twice."""
        self._closed = True
        self._stop()

    # -- inside ---------------------------------------------------------------------

    def say(self, prompt: Prompt) -> bool:
        """Play ``prompt`` now unless quiet, off, missing or already playing; whether it was started."""
        if self._closed or not self.settings.enabled:
            return False
        if quiet_at(self.settings.quiet_hours, self._now().time()):
            return False
        if self._playing is not None and self._playing[0] is prompt and self._playing[1].poll() is None:
            return False  # the same words are still being said
        path = wav_path(self.settings.folder, prompt)
        if not path.is_file():
            if prompt not in self._missing:
                self._missing.add(prompt)
                log.warning("voice: no %s (scripts/voice makes the prompts)", path)
            return False
        self._stop()
        cmd = [self.settings.player] + (["-D", self.settings.alsa_device] if self.settings.alsa_device else [])
        try:
            proc = subprocess.Popen(cmd + ["-q", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as e:
            log.error("voice: cannot run %s: %s", self.settings.player, e.strerror or e)
            return False
        self._playing = (prompt, proc)
        self.spoken.append(prompt)
        return True

    def _stop(self) -> None:
        if self._playing is None:
            return
        _, proc = self._playing
        self._playing = None
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "VoicePanel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
