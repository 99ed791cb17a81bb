"""The commands that docs/examples.md and each example's README tell a newcomer to type
name files that exist and options that the program accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.procs import EXAMPLES, REPO

DOCS = [REPO / "docs" / "examples.md", *sorted(EXAMPLES.glob("*/README.md"))]
FENCE = re.compile(r"```(?:sh|console)\n(.*?)```", re.S)


def commands(doc: Path) -> list[list[str]]:
    """Each command line of the doc's shell blocks, continuations joined, as argv."""
    found = []
    for block in FENCE.findall(doc.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                argv = shlex.split(line)
                while argv and "=" in argv[0] and not argv[0].startswith("-"):
                    argv = argv[1:]  # VAR=value prefixes
                if argv:
                    found.append(argv)
    return found


def options_of(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def callstream_options(command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "callstream", command, "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return set(re.findall(r"--[a-z][a-z-]*", out))


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_every_command_in_the_doc_names_real_files_and_options(doc: Path) -> None:
    argvs = commands(doc)
    assert argvs, f"{doc} shows no command"
    demo_audio = (REPO / "callstream" / "demo" / "audio").is_dir()
    for argv in argvs:
        program = argv[0]
        if program in ("python", "node"):
            source = REPO / argv[1]
            assert source.is_file(), f"{doc.name}: {argv[1]} does not exist"
            text = source.read_text()
            for option in options_of(argv[2:]):
                accepted = (f'"{option}"' in text if program == "python"
                            else f"{option[2:]}: {{" in text)
                assert accepted, f"{doc.name}: {argv[1]} has no option {option}"
        elif program == "callstream" and argv[1] in ("serve", "call"):
            assert options_of(argv) <= callstream_options(argv[1]), f"{doc.name}: {argv}"
            for path in (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--play"):
                # The bundled recordings arrive with `callstream demo`; check once present.
                if demo_audio or not path.startswith("callstream/demo/"):
                    assert (REPO / path).is_file(), f"{doc.name}: {path} does not exist"
        elif program == "npm":
            assert argv[1:3] == ["ci", "--prefix"] and (REPO / argv[3] / "package-lock.json"
                                                          ).is_file(), f"{doc.name}: {argv}"


def test_ci_installs_the_node_example() -> None:
    assert "npm ci --prefix examples/node_sdk" in (REPO / ".ci" / "run").read_text()
