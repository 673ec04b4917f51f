"""[screen] and [voice]: checked at start-up, naming the file, the line and the key."""

from __future__ import annotations

import pytest

from kiosk.config import KioskConfig, load_config, parse_config
from kiosk.errors import ConfigError


def test_defaults_are_off_and_loopback():
    cfg = KioskConfig()
    assert (cfg.screen.enabled, cfg.screen.bind, cfg.screen.port, cfg.screen.open_to_network) == (
        False, "127.0.0.1", 8088, False)
    assert (cfg.voice.enabled, cfg.voice.quiet_hours, cfg.voice.player) == (False, "", "aplay")


def test_a_network_address_needs_open_to_network(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_text('[device]\nsite = "s"\n\n[screen]\nenabled = true\nbind = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}:6: screen.bind: Value error, 0.0.0.0 is not loopback" in str(e.value)
    assert "open_to_network = true" in str(e.value)
    opened = parse_config('[screen]\nenabled = true\nbind = "0.0.0.0"\nopen_to_network = true\n')
    assert opened.screen.bind == "0.0.0.0"


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1", "127.0.0.53"])
def test_loopback_addresses_are_fine(bind):
    assert parse_config(f'[screen]\nbind = "{bind}"\n').screen.bind == bind


@pytest.mark.parametrize("line, key", [
    ('bind = "localhost.example"', "screen.bind"),
    ("port = 70000", "screen.port"),
    ("colour = 1", "screen.colour"),
])
def test_bad_screen_keys_name_their_line(tmp_path, line, key):
    path = tmp_path / "kiosk.toml"
    path.write_text(f"[screen]\nenabled = true\n{line}\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: {key}:"):
        load_config(path)


@pytest.mark.parametrize("hours", ["22:00-07:00", "12:30-13:30", ""])
def test_quiet_hours(hours):
    assert parse_config(f'[voice]\nquiet_hours = "{hours}"\n').voice.quiet_hours == hours


@pytest.mark.parametrize("hours", ["22-07", "24:00-07:00", "22:00 - 07:00", "07:00-07:00", "7:00-8:00"])
def test_bad_quiet_hours_name_their_line(tmp_path, hours):
    path = tmp_path / "kiosk.toml"
    path.write_text(f'[voice]\nenabled = true\nquiet_hours = "{hours}"\n')
    with pytest.raises(ConfigError, match=rf"{path}:(1|3): voice"):
        load_config(path)
