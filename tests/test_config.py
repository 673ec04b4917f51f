"""Config: typed, documented, and refused with file, line and key when wrong."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from kiosk.config import DEFAULT_CONFIG_PATH, KioskConfig, Section, load_config, parse_config
from kiosk.errors import ConfigError


def _keys(model: type[Section], prefix=""):
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            yield from _keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_documented_config_equals_the_defaults():
    shipped = load_config(DEFAULT_CONFIG_PATH)
    assert shipped.model_dump() == KioskConfig().model_dump()


def test_every_key_is_documented_with_a_comment():
    text = DEFAULT_CONFIG_PATH.read_text()
    raw = tomllib.loads(text)
    lines = text.splitlines()
    missing, uncommented = [], []
    for key, _ in _keys(KioskConfig):
        table, leaf = key.rsplit(".", 1)
        if leaf not in raw.get(table, {}):
            missing.append(key)
            continue
        # Find the key in its table and check a comment sits above it.
        in_table = False
        for i, line in enumerate(lines):
            if line.strip().startswith("["):
                in_table = line.strip() == f"[{table}]"
            elif in_table and re.match(rf"^{re.escape(leaf)}\s*=", line):
                j = i - 1
                while j >= 0 and lines[j].strip().startswith("#") is False and re.match(r"^\w+\s*=", lines[j]):
                    j -= 1  # keys grouped under one comment
                if j < 0 or not lines[j].strip().startswith("#"):
                    uncommented.append(key)
                break
    assert not missing, f"keys not in config/kiosk.toml: {missing}"
    assert not uncommented, f"keys without a comment: {uncommented}"


def test_unknown_key_names_file_line_and_key(tmp_path):
    p = tmp_path / "k.toml"
    p.write_text('[device]\nsite = "a"\n\n[match]\nthreshold = 0.4\nthreshhold = 0.5\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:6: match.threshhold: unknown key" in msg


def test_unknown_table_is_refused():
    with pytest.raises(ConfigError, match=r"<string>:1: cameras: unknown key"):
        parse_config('[cameras]\nx = 1\n')


def test_wrong_type_and_range(tmp_path):
    p = tmp_path / "k.toml"
    p.write_text('[capture]\nwidth = "wide"\n[match]\nthreshold = -1\nvotes_k = 9\nvotes_m = 5\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:2: capture.width:" in msg and "integer" in msg
    assert f"{p}:4: match.threshold:" in msg and "greater than 0" in msg


def test_cross_field_rule_names_the_table():
    with pytest.raises(ConfigError, match=r"match: Value error, votes_k must be <= votes_m"):
        parse_config("[match]\nvotes_k = 6\nvotes_m = 5\n")


def test_bad_toml_syntax():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[device\nsite=1")


def test_relative_paths_live_under_state_dir(config, state_dir):
    assert config.database_path == state_dir / "kiosk.db"


def test_validate_config_exit_status(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[device]\nsite = "x"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("[detect]\nscale = 5.0\n")
    ok = subprocess.run([sys.executable, "-m", "kiosk.cli", "--validate-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    no = subprocess.run([sys.executable, "-m", "kiosk.cli", "--validate-config", str(bad)], capture_output=True, text=True)
    assert no.returncode == 78
    assert f"{bad}:2: detect.scale" in no.stderr
