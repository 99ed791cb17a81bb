"""Every command a doc shows names files that exist and options the program accepts.

Fast and static, so it also covers the blocks marked not run (benchmarks, a trunk set-up)
and the examples' READMEs; ``test_snippets.py`` runs the runnable ones for real.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache

import pytest

from tests.docs.snippets import REPO, Snippet, all_snippets, commands, parse

EXAMPLE_READMES = sorted((REPO / "examples").glob("*/README.md"))
SHELL_BLOCKS = [s for s in all_snippets() if s.kind == "shell"] + [
    s for path in EXAMPLE_READMES
    for s in parse(str(path.relative_to(REPO)), path.read_text()) if s.kind == "shell"]


def argvs(snippet: Snippet) -> list[list[str]]:
    """Each command of the block as argv: comments, ``VAR=value`` prefixes, ``&`` dropped;
    ``&&`` chains and ``[optional]`` placeholders split apart."""
    found, pending = [], ""
    for line in commands(snippet):
        line = pending + re.sub(r"(^|\s)#.*$", "", line).strip()
        try:
            shlex.split(line)
        except ValueError:  # a quoted value goes on over the next line
            pending = line + "\n"
            continue
        pending = ""
        for part in re.split(r"&&|;|\|", line):
            part = re.sub(r"\[(--[a-z-]+)[^\]]*\]", r"\1", part).strip().rstrip("&").strip()
            if not part:
                continue
            argv = shlex.split(part)
            while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
                argv = argv[1:]
            if argv:
                found.append(argv)
    return found


def options_of(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


@cache
def callstream_options(command: str) -> frozenset[str]:
    out = subprocess.run([sys.executable, "-m", "callstream", command, "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return frozenset(re.findall(r"--[a-z][a-z-]*", out))


@pytest.mark.parametrize("snippet", SHELL_BLOCKS, ids=[s.where for s in SHELL_BLOCKS])
def test_every_command_names_real_files_and_options(snippet: Snippet) -> None:
    for argv in argvs(snippet):
        program = argv[0]
        if program in ("python", "python3", "node") and argv[1:2] != ["-m"]:
            source = REPO / argv[1]
            assert source.is_file(), f"{snippet.where}: {argv[1]} does not exist"
            text = source.read_text()
            for option in options_of(argv[2:]):
                accepted = (f'"{option}"' in text if program != "node"
                            else f"{option[2:]}: {{" in text)
                assert accepted, f"{snippet.where}: {argv[1]} has no option {option}"
        elif program == "callstream" and argv[1] in ("serve", "call", "demo"):
            unknown = options_of(argv) - callstream_options(argv[1])
            assert not unknown, f"{snippet.where}: callstream {argv[1]} has no {unknown}"
            for path in (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--play"):
                assert (REPO / path).is_file(), f"{snippet.where}: {path} does not exist"
        elif program == "npm":
            assert argv[1:3] == ["ci", "--prefix"] and (
                REPO / argv[3] / "package-lock.json").is_file(), f"{snippet.where}: {argv}"


def test_the_parser_splits_chains_and_placeholders() -> None:
    block = Snippet("x.md", 1, "sh", "A=1 python bench/x.py [--quick] [--json out.json] &\n"
                    "pip install -e . && callstream serve   # start\n")
    assert argvs(block) == [["python", "bench/x.py", "--quick", "--json"],
                            ["pip", "install", "-e", "."], ["callstream", "serve"]]


def test_ci_installs_the_node_example() -> None:
    assert "npm ci --prefix examples/node_sdk" in (REPO / ".ci" / "run").read_text()
