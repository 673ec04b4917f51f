"""The docs hold themselves to being tested: every block marked, every snippet run, every link alive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.docs import REPO, all_blocks, pages

#: Snippets no test runs yet: a debt to pay, never to grow. A name stays here only while
#: no test uses it (the test below fails as soon as one does, so the list cannot go stale).
UNTESTED = {
    "events-keys-backend", "events-keys-device", "events-device-toml", "events-consumer",
    "gallery-admin-key", "gallery-publish", "gallery-format", "gallery-tests",
    "provisioning-fleet", "provisioning-reset",
    "appliance-install", "appliance-build-image", "appliance-selftest",
    "appliance-preview",
}

TESTS = Path(__file__).resolve().parent
#: Where snippets are run from: the tests, and the harnesses they share with the scripts.
USERS = (TESTS, REPO / "harness")


def _used_names() -> set[str]:
    used: set[str] = set()
    for f in (f for d in USERS for f in d.rglob("*.py")):
        if f.name in ("test_docs.py", "docs.py"):
            continue
        used.update(re.findall(r"""docs_snippet\(\s*["']([a-z0-9-]+)["']""", f.read_text(encoding="utf-8")))
    return used


def test_every_block_is_marked():
    unmarked = [b.where for b in all_blocks() if not b.marked]
    assert not unmarked, ("blocks without <!-- snippet: NAME --> or <!-- output --> before them: "
                          + ", ".join(unmarked))


def test_snippet_names_are_unique():
    seen: dict[str, str] = {}
    twice = []
    for b in all_blocks():
        if b.name:
            if b.name in seen:
                twice.append(f"{b.name} ({seen[b.name]} and {b.where})")
            seen[b.name] = b.where
    assert not twice, twice


def test_every_snippet_is_run_by_a_test():
    names = {b.name for b in all_blocks() if b.name}
    used = _used_names()
    untested = sorted(names - used - UNTESTED)
    assert not untested, f"snippets no test runs (use docs_snippet(NAME) in a test): {untested}"
    paid = sorted(UNTESTED & used)
    assert not paid, f"tested now: remove from UNTESTED in tests/test_docs.py: {paid}"
    gone = sorted(UNTESTED - names)
    assert not gone, f"no such snippet any more: remove from UNTESTED: {gone}"
    unknown = sorted(used - names)
    assert not unknown, f"tests ask for snippets no page has: {unknown}"


def _anchors(page: Path) -> set[str]:
    out = set()
    fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#+\s+(.*)$", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(a)
    return out


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(target)
    assert not bad, f"{page.name}: links to nowhere: {bad}"


def test_every_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in pages()[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, f"docs pages the README does not link: {missing}"
