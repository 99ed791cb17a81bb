"""The block finder and the shell rewriting, on small documents (no process runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.docs import install_check, shell
from tests.docs.snippets import (
    Snippet,
    SnippetError,
    commands,
    continued,
    parse,
    transcript_output,
)

DOC = """# Title

```sh
callstream serve &
```

<!-- snippet: not run — needs a SIP trunk on the Internet -->
```python
print("hi")
```

~~~json
{"a": 1}
~~~

```text
sample
```
"""


def test_blocks_are_found_with_their_line_kind_and_mark() -> None:
    found = parse("x.md", DOC)
    assert [(s.line, s.info, s.kind, s.runnable) for s in found] == [
        (3, "sh", "shell", True), (8, "python", "python", False), (12, "json", "json", False),
        (16, "text", "sample", False)]
    assert found[0].text == "callstream serve &\n"
    assert found[1].not_run == "needs a SIP trunk on the Internet"
    assert found[0].where == "x.md:3"


@pytest.mark.parametrize(("doc", "error"), [
    ("```\nls\n```\n", "x.md:1: code block has no info string (sh, python, text...)"),
    ("```rust\nfn main() {}\n```\n", "x.md:1: unknown info string 'rust'"),
    ("```sh\nls\n", "x.md:1: code block is never closed"),
    ("<!-- snippet: not run — x -->\n```sh\nls\n```\n", "x.md:2: not-run mark gives no reason"),
    ("<!-- snippet: not run — a good long reason -->\n\n```sh\nls\n```\n",
     "x.md:1: a not-run mark must be the line right before a code block"),
    ("<!-- snippet: skip it -->\n```sh\nls\n```\n", "x.md:1: malformed mark"),
    ("<!-- snippet: continues -->\n```python\nx = 1\n```\n",
     "x.md:2: only a runnable block can continue"),
    ("```python\nx = 1\n```\n<!-- snippet: continues -->\n```python\nx = 2\n```\n",
     "x.md:5: only a runnable block can continue, and only a shell block before it"),
])
def test_bad_blocks_are_named_precisely(doc: str, error: str) -> None:
    with pytest.raises(SnippetError) as caught:
        parse("x.md", doc)
    assert str(caught.value).startswith(error)


def test_a_block_can_continue_the_runnable_shell_block_before_it() -> None:
    doc = ("```sh\ncallstream serve &\n```\n\n```text\nout\n```\n"
           "<!-- snippet: continues -->\n```python\nprint(1)\n```\n")
    first, _, then = parse("x.md", doc)
    assert then.continues == first
    assert continued([first, then]) == {"x.md:1": then}


def test_a_transcript_separates_commands_from_output() -> None:
    block = Snippet("x.md", 1, "console", "$ callstream serve &\n$ echo $?\n1\n")
    assert commands(block) == ["callstream serve &", "echo $?"]
    assert transcript_output(block) == ["1"]
    plain = Snippet("x.md", 1, "sh", "a \\\n  --b\nc\n")
    assert commands(plain) == ["a    --b", "c"]
    assert transcript_output(plain) == []


def test_documented_addresses_move_to_the_test_ports() -> None:
    ports = shell.Ports(http=18080, sip=15060, app=19000, bot=18765)
    text = ("http://127.0.0.1:8080/v2 sip:bot@127.0.0.1:5060 localhost:9000 "
            "ws://127.0.0.1:8766/ws 127.0.0.1:80801 192.0.2.1:8080 sock.bind((\"0.0.0.0\", 5000))")
    assert shell.rewrite(text, ports) == (
        "http://127.0.0.1:18080/v2 sip:bot@127.0.0.1:15060 127.0.0.1:19000 "
        "ws://127.0.0.1:18765/ws 127.0.0.1:80801 192.0.2.1:8080 sock.bind((\"127.0.0.1\", 5000))")


def test_a_block_that_starts_a_server_is_told_apart() -> None:
    assert shell.starts_server(Snippet("x.md", 1, "sh", "pip install -e . && callstream serve\n"))
    assert shell.starts_server(Snippet("x.md", 1, "sh", "A=1 callstream demo --once\n"))
    assert not shell.starts_server(Snippet("x.md", 1, "sh", "callstream keys create\n"))


def test_the_script_strips_background_ampersands_and_fails_fast() -> None:
    script = shell.script(Snippet("x.md", 1, "sh", "callstream serve &\na && b\n"),
                          shell.Ports(1, 2, 3, 4), "/usr/bin/python3")
    assert script.endswith("callstream serve\na && b\n")
    assert "set -eo pipefail" in script
    transcript = shell.script(Snippet("x.md", 1, "console", "$ false\n$ echo $?\n1\n"),
                              shell.Ports(1, 2, 3, 4), "/usr/bin/python3")
    assert "set +e" in transcript and transcript.endswith("false\necho $?\n")


@pytest.mark.parametrize(("argv", "ok"), [
    (["pip", "install", "-e", "."], True),
    (["pip", "install", "telnyx[webhooks]"], True),
    (["pip", "install", "surely-not-installed-dist"], False),
    (["pip", "install", "-e", ".[no-such-extra]"], False),
    (["apt-get", "update"], True),
    (["apt-get", "install", "-y", "sip-tester"], True),
    (["apt-get", "install", "-y", "unknown-package"], False),
    (["npm", "ci", "--prefix", "examples/node_sdk"], True),
    (["npm", "install"], False),
])
def test_installers_are_checked_not_run(argv: list[str], ok: bool) -> None:
    problems = {"pip": install_check.check_pip, "apt-get": install_check.check_apt,
                "npm": install_check.check_npm}[argv[0]](argv[1:])
    assert (problems == []) is ok, problems


def test_the_install_check_exits_1_naming_what_is_missing() -> None:
    done = subprocess.run([sys.executable, install_check.__file__, "pip", "install",
                           "surely-not-installed-dist"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert "surely-not-installed-dist (from 'surely-not-installed-dist') is not installed" in (
        done.stderr)
