"""docs/screen.md: its config snippets are valid, its voice command runs, its pictures are the browser test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

from harness.docs import REPO, docs_snippet
from kiosk.config import parse_config
from kiosk.prompts import Prompt

BIN = Path(sys.executable).parent


def test_the_screen_config_turns_it_on_on_loopback():
    screen = parse_config(docs_snippet("screen-config")).screen
    assert (screen.enabled, screen.bind, screen.port, screen.open_to_network) == (True, "127.0.0.1", 8088, False)


def test_the_voice_config():
    voice = parse_config(docs_snippet("voice-config")).voice
    assert (voice.enabled, str(voice.folder), voice.quiet_hours) == (True, "/opt/kiosk/voice", "22:00-07:00")


def test_the_voice_build_command_runs_as_written(tmp_path):
    (tmp_path / "scripts").symlink_to(REPO / "scripts")  # run from a checkout, as the page says
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("voice-build")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for p in Prompt:
        with wave.open(str(tmp_path / "voice" / f"{p.value}.wav")) as w:
            assert w.getnframes() > 0


def test_the_pictures_are_the_browser_tests_states():
    kept = set(re.findall(r'keep\(chromium, "([a-z-]+)"\)',
                          (REPO / "tests/screen/test_door_screen_browser.py").read_text()))
    shown = set(re.findall(r"\(screen/([a-z-]+)\.png\)", (REPO / "docs/screen.md").read_text()))
    committed = {p.stem for p in (REPO / "docs/screen").glob("*.png")}
    assert kept == shown == committed, (kept, shown, committed)
