"""The code blocks of README.md and docs/*.md, for the tests that run them verbatim.

Every fenced block is preceded by a marker line: ``<!-- snippet: NAME -->``
for a command, config or code snippet that a test runs (it gets the text
with :func:`docs_snippet`), or ``<!-- output -->`` for what a command prints.
``tests/test_docs.py`` holds the pages to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*(snippet:\s*(?P<name>[a-z0-9][a-z0-9-]*)|(?P<output>output))\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    name: str | None  # the snippet's name; None for output or an unmarked block
    marked: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, fence = i, m.group("fence")
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mm = MARKER.match(prev.strip())
        out.append(Block(page, start + 1, m.group("lang"), "\n".join(lines[start + 1 : j]) + "\n",
                         mm.group("name") if mm else None, bool(mm)))
        i = j + 1
    return out


@cache
def all_blocks() -> tuple[Block, ...]:
    return tuple(b for p in pages() for b in blocks_of(p))


def docs_snippet(name: str) -> str:
    """The text of the snippet marked ``<!-- snippet: NAME -->``, exactly as the page has it."""
    found = [b for b in all_blocks() if b.name == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} snippets named {name!r} in README.md and docs/")
    return found[0].text


def sh_lines(snippet: str) -> list[str]:
    """The commands of a shell snippet: continuation lines joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", snippet)
    return [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def run_sh(snippet: str, cwd, timeout: float = 120, **env):
    """A snippet run verbatim by bash in ``cwd`` (``set -euo pipefail``), the virtualenv's commands first on PATH."""
    import os
    import subprocess
    import sys

    path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PATH": path, **env})
