"""The recipes in data/recipes/ that extract more populations' development halves: shellcheck-clean, documented,
and written to extract only the development half."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "data" / "recipes"
README = RECIPES / "README.md"


def recipes() -> list[Path]:
    return sorted(RECIPES.glob("*.sh"))


def readme_table_recipes() -> set[str]:
    """The recipe names in the README's table (first cell of each row, as `NAME-dev.sh GIT_DIR OUT`)."""
    return set(re.findall(r"^\| `([\w.-]+\.sh) GIT_DIR OUT` \|", README.read_text(), flags=re.MULTILINE))


def test_the_readme_states_the_split_and_what_is_held_out():
    text = README.read_text()
    assert "SHA-256" in text and "even" in text
    for held_out in ("leecarraher/pattern_recognition", "matush97/faceRecognition", "Replay-Attack", "NUAA", "odd"):
        assert held_out in text, held_out


def test_the_readme_table_names_exactly_the_recipes_there_are():
    assert readme_table_recipes() == {p.name for p in recipes()}


@pytest.mark.parametrize("recipe", recipes(), ids=lambda p: p.name)
def test_recipe_is_shellcheck_clean(recipe):
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (scripts/bootstrap installs it)")
    r = subprocess.run([exe, str(recipe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("recipe", recipes(), ids=lambda p: p.name)
def test_recipe_pins_a_commit_and_splits_by_the_labels_hash(recipe):
    text = recipe.read_text()
    assert re.search(r"\bC=[0-9a-f]{40}\b", text), "the recipe reads one pinned commit"
    assert "sha256sum" in text and "[02468ace]" in text, "the recipe keeps the even-hash identities only"
