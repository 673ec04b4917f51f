"""What the three commands share: --version, where --config goes and defaults to, one --validate-config,
every sub-command in docs/configuration.md, man pages and completions generated from the parsers."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from kiosk import admin, cli
from kiosk.backend import ingest
from kiosk.cliopts import default_config

REPO = Path(__file__).resolve().parent.parent
MAIN = {
    "kiosk": ["-m", "kiosk.cli"],
    "kiosk-admin": ["-c", "import sys; from kiosk.admin import main; sys.exit(main())"],
    "kiosk-ingest": ["-m", "kiosk.backend.ingest"],
}
BUILD = {"kiosk": cli.build_parser, "kiosk-admin": admin.build_parser, "kiosk-ingest": ingest.build_parser}
GOOD = '[device]\nsite = "elm-court"\ndevice_id = "door-1"\nstate_dir = "state"\n'


def run(command: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("KIOSK_CONFIG", "KIOSK_INGEST_CONFIG")}
    return subprocess.run([sys.executable, *MAIN[command], *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**base, "PYTHONPATH": str(REPO), **(env or {})})


def subcommands(parser: argparse.ArgumentParser, prefix: str):
    """Every sub-command, nested ones too: (``"kiosk-admin keys device"``, its parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from subcommands(sub, f"{prefix} {name}")


def leaves(parser: argparse.ArgumentParser, prefix: str):
    """The sub-commands that have no sub-commands of their own, as argument lists."""
    return [full.split()[1:] for full, sub in subcommands(parser, prefix)
            if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)]


@pytest.mark.parametrize("command", sorted(MAIN))
def test_version_prints_the_package_version(command):
    r = run(command, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{command} {metadata.version('kiosk')}"


def test_the_config_is_the_option_else_the_environment_else_the_system_file_where_it_exists(tmp_path):
    system = tmp_path / "kiosk.toml"
    env = {"KIOSK_CONFIG": "/from/env.toml"}
    assert default_config("given.toml", system=system, environ=env) == "given.toml"
    assert default_config(None, system=system, environ=env) == "/from/env.toml"
    assert default_config(None, system=system, environ={}) is None  # today's behaviour: the built-in defaults
    system.write_text(GOOD)
    assert default_config(None, system=system, environ={}) == str(system)
    assert default_config(None, system=system, environ={"KIOSK_CONFIG": ""}) == str(system)


@pytest.mark.parametrize("command", ["kiosk", "kiosk-admin"])
def test_kiosk_config_names_the_file_that_validate_config_checks(command, tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(GOOD + "colour = 3\n")
    r = run(command, "--validate-config", env={"KIOSK_CONFIG": str(good)}, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, f"{good}: OK\n"), r.stderr
    r = run(command, "--validate-config", env={"KIOSK_CONFIG": str(bad)}, cwd=tmp_path)
    assert r.returncode == 78 and "colour: unknown key" in r.stderr
    # --config wins over the environment; both spellings of --validate-config check the same file.
    for args in (["--config", str(bad), "--validate-config"], ["--validate-config", str(bad)]):
        r = run(command, *args, env={"KIOSK_CONFIG": str(good)}, cwd=tmp_path)
        assert r.returncode == 78 and f"{bad}:" in r.stderr, (args, r.stderr)


def test_kiosk_ingest_reads_kiosk_ingest_config_and_validates_in_both_spellings(tmp_path):
    bad = tmp_path / "ingest.toml"
    bad.write_text("[store]\nretension_days = 3\n")
    for args, env in ((["--validate-config"], {"KIOSK_INGEST_CONFIG": str(bad)}),
                      (["--config", str(bad), "--validate-config"], {}),
                      (["--validate-config", str(bad)], {"KIOSK_INGEST_CONFIG": str(tmp_path / "other.toml")})):
        r = run("kiosk-ingest", *args, env=env)
        assert r.returncode == 78 and f"{bad}:" in r.stderr and "store.retension_days: unknown key" in r.stderr, (
            args, r.stderr)
    # Without either, the system file, as before (and its absence is a config error).
    r = run("kiosk-ingest", "--validate-config")
    assert r.returncode == 78 and "/etc/kiosk/ingest.toml" in r.stderr


@pytest.mark.parametrize("command", ["kiosk", "kiosk-admin"])
def test_config_goes_before_the_subcommand_and_after_it_still_works(command):
    parser = BUILD[command]()
    subs = leaves(parser, command)
    assert subs
    for _, sub in subcommands(parser, command):  # only where --config lands matters here, not the other arguments
        for action in sub._actions:
            action.required = False
            if not action.option_strings and action.nargs in (None, "+"):
                action.nargs = "?" if action.nargs is None else "*"
        for group in sub._mutually_exclusive_groups:
            group.required = False
    for words in subs:
        assert parser.parse_known_args(["--config", "a.toml", *words])[0].config == "a.toml", words
        assert parser.parse_known_args([*words, "--config", "b.toml"])[0].config == "b.toml", words
        assert parser.parse_known_args(words)[0].config is None, words


def test_configuration_page_lists_every_subcommand():
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [full for command in ("kiosk", "kiosk-admin") for full, _ in subcommands(BUILD[command](), command)
               if f"`{full}`" not in page]
    assert not missing, f"docs/configuration.md does not list: {', '.join(missing)}"
    assert "`kiosk-ingest`" in page


def test_man_pages_and_completions_are_generated_from_the_parsers():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "manpages"), "--check"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    for command in MAIN:
        page = (REPO / "share" / "man" / "man1" / f"{command}.1").read_text()
        assert page.startswith(f".TH {command.upper().replace('-', chr(92) + '-')} ") and "\\-\\-version" in page


def test_bash_completes_subcommands_from_the_generated_file():
    script = REPO / "share" / "bash-completion" / "completions" / "kiosk-admin"
    r = subprocess.run(["bash", "-c", f'source "{script}"; COMP_WORDS=(kiosk-admin keys ""); COMP_CWORD=2; '
                        '_shtab_kiosk_admin; printf "%s\\n" "${COMPREPLY[@]}"'], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"device", "backend", "show"}
