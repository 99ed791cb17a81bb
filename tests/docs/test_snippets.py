"""Every code block in README.md and docs/**/*.md is run (or parsed) by the suite.

One test per block, named ``doc:line``. Commands run in bash against a real
`callstream serve` (one all docs share, or the block's own; see ``worlds.py`` and
``shell.py``), Python with the server's environment (``TELNYX_API_KEY``,
``TELNYX_BASE_URL``, ``TELNYX_PUBLIC_KEY``, ``KEY``, and ``CALL``, a live answered call,
for the blocks that use it); JSON must parse, callstream TOML must be valid settings.
Blocks that cannot run here carry ``<!-- snippet: not run — reason -->`` in the doc.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from callstream.config import Settings
from tests.docs import shell
from tests.docs.snippets import Snippet, all_snippets, commands, continued, transcript_output
from tests.docs.test_commands import argvs
from tests.docs.worlds import World, Worlds

pytestmark = pytest.mark.slow

BLOCK_TIMEOUT_SECS = 240  # one block, however slow the machine; never a timing assert
RUNS_FOREVER = re.compile(r"^\s*while True:|serve_forever\(|uvicorn\.run\(|\.run_forever\(",
                          re.M)
STAYS_UP_SECS = 3.0  # a program that runs forever must still be up after this
USES_CALL = re.compile(r"\$CALL\b|\$\{CALL\}|environ\[\"CALL\"\]")

CHECKED = [s for s in all_snippets() if s.kind != "sample"]
CONTINUED = continued(CHECKED)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worlds]:
    all_worlds = Worlds(tmp_path_factory.mktemp("snippets"))
    yield all_worlds
    all_worlds.close()


def run_process(argv: list[str], world: World, env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=world.cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_SECS, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{output}"
    return output


def expect_transcript(snippet: Snippet, output: str, ports: shell.Ports) -> None:
    """Each output line the doc shows was printed (``…`` stands for anything)."""
    for line in transcript_output(snippet):
        if line.strip():
            pattern = ".*".join(map(re.escape, shell.rewrite(line, ports).split("…")))
            assert re.search(pattern, output, re.M), (
                f"the doc shows {line!r}, the run printed:\n{output}")


def run_shell(snippet: Snippet, world: World, env: dict[str, str],
              then: Snippet | None = None) -> None:
    """The block in bash; ``then``, a block that continues it, runs before its background
    programs are stopped."""
    text = shell.script(snippet, world.ports, sys.executable)
    if then is not None and then.kind == "python":
        source = world.cwd / f"snippet-{then.line}.py"
        source.write_text(shell.rewrite(then.text, world.ports))
        text += f'echo "[snippet test] {then.where}, continuing:"\n"$PY" {source}\n'
    elif then is not None:
        text += "\n".join(shell.rewrite(line, world.ports) for line in commands(then)) + "\n"
    script = world.cwd / f"snippet-{snippet.line}.sh"
    script.write_text(text)
    output = run_process(["bash", str(script)], world, env)
    expect_transcript(snippet, output, world.ports)


def run_python(snippet: Snippet, world: World, env: dict[str, str]) -> None:
    source = world.cwd / f"snippet-{snippet.line}.py"
    source.write_text(shell.rewrite(snippet.text, world.ports))
    if not RUNS_FOREVER.search(snippet.text):
        run_process([sys.executable, str(source)], world, env)
        return
    proc = subprocess.Popen([sys.executable, str(source)], cwd=world.cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(STAYS_UP_SECS)
        assert proc.poll() is None, f"it stopped ({proc.returncode}):\n{proc.communicate()[0]}"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def run_js(snippet: Snippet, world: World, env: dict[str, str]) -> None:
    source = world.cwd / f"snippet-{snippet.line}.mjs"
    source.write_text(shell.rewrite(snippet.text, world.ports))
    run_process(["node", str(source)], world, env)


def parse_json(text: str) -> list[object]:
    """One JSON document, or several in a row (JSON Lines); ``{…}``/``[…]`` elide content."""
    text = re.sub(r"(?<=[{\[])\s*…\s*(?=[}\]])", "", text)
    decoder = json.JSONDecoder()
    values, at = [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def world_for(snippet: Snippet, worlds: Worlds) -> World:
    if snippet.kind == "shell" and shell.starts_server(snippet):
        return worlds.fresh(snippet.where)
    return worlds.shared(snippet.doc)


@pytest.mark.parametrize("snippet", CHECKED, ids=[s.where for s in CHECKED])
def test_snippet(snippet: Snippet, worlds: Worlds) -> None:
    if snippet.not_run is not None:
        pytest.skip(f"marked in the doc: not run — {snippet.not_run}")
    if snippet.kind == "json":
        assert parse_json(snippet.text)
        return
    if snippet.kind == "toml":
        data = tomllib.loads(snippet.text)
        if snippet.text.lstrip().startswith("# callstream.toml") or set(data) <= set(
                Settings.model_fields):
            Settings.model_validate(data)
        return
    if snippet.where in CONTINUED:
        pytest.skip(f"run by {CONTINUED[snippet.where].where}, which continues it")
    if snippet.continues is not None:
        world = world_for(snippet.continues, worlds)
        run_shell(snippet.continues, world, dict(world.env), then=snippet)
        return
    world = world_for(snippet, worlds)
    with ExitStack() as stack:
        env = dict(world.env)
        if USES_CALL.search(snippet.text):
            env["CALL"] = stack.enter_context(world.live_call())
        {"shell": run_shell, "python": run_python, "js": run_js}[snippet.kind](
            snippet, world, env)


def test_every_block_is_classified_and_the_not_run_ones_are_few() -> None:
    """No block without an info string (``all_snippets`` raises), few marked not run.

    A block of benchmark runs only (``python bench/…``) is not counted: a benchmark takes
    minutes of every core, and ``test_commands.py`` checks its script and options."""
    marked = [s.where for s in all_snippets() if s.not_run is not None and not bench_only(s)]
    runnable = [s for s in all_snippets() if s.runnable]
    assert len(marked) <= len(runnable) // 3, marked


def bench_only(snippet: Snippet) -> bool:
    runs = argvs(snippet) if snippet.kind == "shell" else []
    return bool(runs) and all(len(a) > 1 and a[1].startswith("bench/") for a in runs)


def test_json_elisions_are_understood() -> None:
    assert parse_json('{"a": {…}, "b": […]}\n{"c": 1}') == [{"a": {}, "b": []}, {"c": 1}]
    with pytest.raises(json.JSONDecodeError):
        parse_json('{"a": …}')

