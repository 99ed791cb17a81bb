"""The fenced code blocks of README.md and docs/**/*.md, each classified by its info string.

Pure functions over a document's text: no files are run here (see ``shell.py`` for how a
command block becomes a script, and ``test_snippets.py`` for running them).

Kinds:

- ``shell``: commands (``sh``, ``bash``, ``console``, ``shell``). In a block whose lines
  start with ``$ `` (a transcript), only those lines are commands; the rest is the output.
- ``python``, ``js``: programs.
- ``json``, ``toml``: data that must parse; the others (``text``, ``http``...) are samples.

A block with no info string is an error: a reader (and this suite) cannot tell a command
from a sample. A block that cannot run here is preceded by
``<!-- snippet: not run — <reason> -->``; a block that runs while the programs of the
runnable block before it still run ("with the three programs above still running") by
``<!-- snippet: continues -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

KINDS: dict[str, str] = {
    "sh": "shell", "bash": "shell", "console": "shell", "shell": "shell",
    "python": "python", "py": "python",
    "js": "js", "javascript": "js", "node": "js",
    "json": "json", "toml": "toml",
    "text": "sample", "http": "sample", "xml": "sample", "ini": "sample", "html": "sample",
}
RUNNABLE = frozenset({"shell", "python", "js"})

FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
NOT_RUN = re.compile(r"^<!--\s*snippet:\s*not run\s*[\u2014\u2013-]+\s*(?P<reason>.*?)\s*-->\s*$")
CONTINUES = re.compile(r"^<!--\s*snippet:\s*continues\s*-->\s*$")
MIN_REASON_LENGTH = 10  # "not run — x" says nothing; a reason is a phrase


class SnippetError(Exception):
    """A document's code block that the suite cannot classify (names the file and line)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Snippet:
    """One fenced block: where it starts (the fence's line, 1-based), its kind and text."""

    doc: str  # path relative to the repository, e.g. "docs/forking.md"
    line: int
    info: str
    text: str
    not_run: str | None = None  # the reason given in the doc, when it is marked not run
    continues: Snippet | None = None  # the runnable block it runs after, when so marked

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str:
        return KINDS[self.info]

    @property
    def runnable(self) -> bool:
        return self.kind in RUNNABLE and self.not_run is None


def parse(doc: str, text: str) -> list[Snippet]:
    """Every fenced block of a Markdown document, in order.

    Raises:
        SnippetError: a block without an info string, with an unknown one, one that is
            never closed, or a ``not run`` mark without a reason or before a non-block.
    """
    lines = text.splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            mark = NOT_RUN.match(lines[i].strip()) or CONTINUES.match(lines[i].strip())
            if lines[i].lstrip().startswith("<!-- snippet:") and not mark:
                raise SnippetError(f"{doc}:{i + 1}", "malformed mark; write "
                                   "<!-- snippet: not run — <reason> -->")
            if mark and not (i + 1 < len(lines) and FENCE_OPEN.match(lines[i + 1])):
                raise SnippetError(f"{doc}:{i + 1}", "a not-run mark must be the line "
                                   "right before a code block")
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip().split(" ")[0]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and not lines[i].strip().strip(fence[0])):
            body.append(lines[i][len(m["indent"]):] if lines[i].startswith(m["indent"])
                        else lines[i])
            i += 1
        where = f"{doc}:{start + 1}"
        if i == len(lines):
            raise SnippetError(where, "code block is never closed")
        i += 1
        if not info:
            raise SnippetError(where, "code block has no info string (sh, python, text...)")
        if info not in KINDS:
            raise SnippetError(where, f"unknown info string {info!r}; one of "
                               f"{', '.join(sorted(KINDS))}")
        reason = None
        prev = lines[start - 1].strip() if start else ""
        if mark := NOT_RUN.match(prev):
            reason = mark["reason"]
            if len(reason) < MIN_REASON_LENGTH:
                raise SnippetError(where, f"not-run mark gives no reason: {prev!r}")
        before = None
        if CONTINUES.match(prev):
            runnable = [s for s in found if s.runnable]
            if not runnable or runnable[-1].kind != "shell" or KINDS[info] not in RUNNABLE:
                raise SnippetError(where, "only a runnable block can continue, and only a "
                                   "shell block before it")
            before = runnable[-1]
        found.append(Snippet(doc, start + 1, info, "\n".join(body) + "\n", reason, before))
    return found


def documents() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def continued(snippets: list[Snippet]) -> dict[str, Snippet]:
    """Block (``where``) → the block that continues it."""
    return {s.continues.where: s for s in snippets if s.continues is not None}


def all_snippets() -> list[Snippet]:
    out: list[Snippet] = []
    for path in documents():
        out += parse(str(path.relative_to(REPO)), path.read_text())
    return out


def commands(snippet: Snippet) -> list[str]:
    """The command lines of a shell block, continuations joined, comments kept.

    In a transcript (lines starting with ``$ ``) only the prompted lines are commands.
    """
    text = snippet.text.replace("\\\n", " ")
    lines = text.splitlines()
    if any(line.startswith("$ ") for line in lines):
        return [line[2:] for line in lines if line.startswith("$ ")]
    return lines


def transcript_output(snippet: Snippet) -> list[str]:
    """The output lines of a transcript block (empty when the block is plain commands)."""
    lines = snippet.text.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return []
    return [line for line in lines if not line.startswith("$ ")]
