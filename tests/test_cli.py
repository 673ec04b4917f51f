"""Every command of both CLIs is documented (has help and a description)."""

from __future__ import annotations

import argparse

import pytest

from kiosk import admin, cli


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


@pytest.mark.parametrize("build", [cli.build_parser, admin.build_parser], ids=["kiosk", "kiosk-admin"])
def test_every_command_and_option_has_help(build):
    parser = build()
    subs = list(_subcommands(parser))
    assert subs, "no sub-commands registered"
    for name, short_help, sub in subs:
        assert short_help, f"{parser.prog} {name}: no help line"
        assert sub.description, f"{parser.prog} {name}: no description"
        for action in sub._actions:
            if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{parser.prog} {name} {action.option_strings or action.dest}: undocumented"


def test_kiosk_admin_help_lists_enroll(capsys):
    with pytest.raises(SystemExit) as e:
        admin.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "enroll" in out and "evaluate" in out
