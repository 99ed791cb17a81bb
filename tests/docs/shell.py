"""A doc's command block as a bash script that runs here, against test ports.

Pure text work: ``rewrite()`` moves the documented addresses to the test's free ports,
``script()`` wraps the block's own lines (kept as written, one per line) in a prelude
that
- runs ``callstream`` and ``python`` from this checkout (``sys.executable``);
- starts long-running programs (``callstream serve``, ``callstream demo`` without
  ``--once``, the example bots and apps) in the background, waits until they listen,
  and stops them when the block's other steps are done (they must still be running);
- checks, instead of re-running, what installers would install (``pip``, ``apt-get``,
  ``npm ci``, through ``install_check.py`` on ``PATH``; ``sudo`` just runs the command);
- follows a never-ending ``curl -N`` for a few seconds;
- does not start the test suite inside itself (``python3 -m pytest``), nor make a venv
  (``python3 -m venv DIR`` checks that it could, and leaves an empty ``activate``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.docs.snippets import Snippet, commands, transcript_output

HERE = Path(__file__).resolve().parent
LISTEN_TIMEOUT_SECS = 90  # a program started in the background must listen by then
STOP_TIMEOUT_SECS = 20
FOLLOW_SECS = 3  # how long `curl -N` (a stream that never ends) is followed


@dataclass(frozen=True, slots=True)
class Ports:
    """The test's stand-ins for the documented addresses."""

    http: int  # 8080
    sip: int  # 5060
    app: int  # 9000, the webhook app of examples/
    bot: int  # 8765 (websockets bot) and 8766 (Pipecat bot)


def rewrite(text: str, ports: Ports) -> str:
    """Documented loopback addresses → the test's ports (other text unchanged)."""
    table = {"8080": ports.http, "5060": ports.sip, "9000": ports.app,
             "8765": ports.bot, "8766": ports.bot}
    text = re.sub(r"(127\.0\.0\.1|localhost):(8080|5060|9000|8765|8766)\b",
                  lambda m: f"127.0.0.1:{table[m[2]]}", text)
    return text.replace('bind(("0.0.0.0", ', 'bind(("127.0.0.1", ')  # loopback only here


def starts_server(snippet: Snippet) -> bool:
    """Whether the block runs its own ``callstream serve`` (then it gets a fresh world)."""
    return any(re.search(r"(^|[;&|(]\s*|\s)callstream (serve|demo)\b", line)
               for line in commands(snippet))


def script(snippet: Snippet, ports: Ports, python: str) -> str:
    """The block as a bash script; a transcript (``$ `` lines) goes on after a failure,
    as a terminal does, so that its ``echo $?`` can show the status."""
    body = []
    for line in commands(snippet):
        line = line.rstrip()
        if line.endswith("&") and not line.endswith("&&"):
            line = line[:-1].rstrip()  # the prelude backgrounds what runs long
        body.append(rewrite(line, ports))
    errexit = "set +e" if transcript_output(snippet) else "set -eo pipefail"
    return PRELUDE.format(errexit=errexit, python=shlex.quote(python), here=shlex.quote(str(HERE)),
                          http=ports.http, sip=ports.sip, app=ports.app, bot=ports.bot,
                          listen=LISTEN_TIMEOUT_SECS, follow=FOLLOW_SECS, stop=STOP_TIMEOUT_SECS,
                          where=snippet.where) + "\n".join(body) + "\n"


PRELUDE = r"""# {where}, as the test runs it
{errexit}
export PATH={here}/bin:$PATH   # pip, apt-get, npm, sudo: check, do not install
export PY={python}
BG_PIDS=()
BG_LOGS=()

_listening() {{  # bash's own connect: a Python per try would cost the starting program CPU
    {{ : <>"/dev/tcp/127.0.0.1/$1"; }} 2>/dev/null
}}

# _background READY CMD...: start CMD, wait until it is ready: it listens on port READY, or
# (READY=~TEXT) has printed TEXT. If it exits first, its output and status are the result.
_background() {{
    local port=$1; shift
    local log; log=$(mktemp --suffix=.log)
    "$@" >"$log" 2>&1 &
    local pid=$!
    BG_PIDS+=("$pid"); BG_LOGS+=("$log")
    echo "[snippet test] started in the background (pid $pid): $*"
    for _ in $(seq 1 $(({listen} * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then  # it ended: as if run in the foreground
            local rc=0; wait "$pid" || rc=$?
            unset 'BG_PIDS[-1]' 'BG_LOGS[-1]'
            echo "[snippet test] it exited ($rc) before listening on $port; its output:"
            cat "$log"; return $rc
        fi
        if [[ $port == "~"* ]]; then grep -qF -- "${{port:1}}" "$log" && return 0
        elif _listening "$port"; then return 0; fi
        sleep 0.1
    done
    echo "[snippet test] nothing listens on $port after {listen} s:"; cat "$log"; return 1
}}

_stop_background() {{
    local rc=$? i
    for i in "${{!BG_PIDS[@]}}"; do
        local pid=${{BG_PIDS[$i]}}
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "[snippet test] background pid $pid died during the block"; rc=1
        fi
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $(({stop} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "[snippet test] output of pid $pid:"; cat "${{BG_LOGS[$i]}}"
    done
    exit $rc
}}
trap _stop_background EXIT

_has() {{  # _has OPTION ARGS...: whether ARGS hold OPTION (or OPTION=...)
    local want=$1 a; shift
    for a in "$@"; do [[ $a == "$want" || $a == "$want="* ]] && return 0; done
    return 1
}}

callstream() {{
    case "${{1:-}}" in
        serve) _background "~callstream listening" "$PY" -m callstream "$@" ;;
        demo)  # a running demo takes the test's 8080/5060; --once finds free ports itself
            if _has --once "$@"; then "$PY" -m callstream "$@"
            else
                local extra=()
                _has --http "$@" || extra+=(--http 127.0.0.1:{http})
                _has --sip "$@" || extra+=(--sip 127.0.0.1:{sip})
                _background "~callstream demo is running" "$PY" -m callstream "$@" "${{extra[@]}}"
            fi ;;
        *) "$PY" -m callstream "$@" ;;
    esac
}}

python() {{
    case "${{1:-}}" in
        -m) if [[ ${{2:-}} == pytest ]]; then
                echo "[snippet test] not started: this is the test suite, running now"
            elif [[ ${{2:-}} == venv ]]; then  # the suite's environment is the venv
                "$PY" -c "import ensurepip, venv"
                mkdir -p "$3/bin"
                echo "# [snippet test] the suite's own environment stands in" >"$3/bin/activate"
            else "$PY" "$@"; fi ;;
        examples/python_sdk_app/app.py)
            local extra=()
            _has --port "$@" || extra+=(--port {app})
            _has --bot "$@" || extra+=(--bot ws://127.0.0.1:{bot})
            _background {app} "$PY" "$@" "${{extra[@]}}" ;;
        examples/*bot/bot.py)
            local extra=()
            _has --port "$@" || extra+=(--port {bot})
            _background {bot} "$PY" "$@" "${{extra[@]}}" ;;
        *) "$PY" "$@" ;;
    esac
}}
python3() {{ python "$@"; }}

sudo() {{ "$@"; }}  # the test runs as if root; `command -v sudo` finds this function

curl() {{  # `curl -N` follows a stream forever: show its first seconds
    if _has -N "$@"; then
        local rc=0
        command curl --max-time {follow} "$@" || rc=$?
        [[ $rc == 28 ]] || return $rc  # 28: stopped by --max-time, as Ctrl-C would
    else command curl "$@"; fi
}}

node() {{
    case "${{1:-}}" in
        examples/*) _background {app} command node "$@" ;;
        *) command node "$@" ;;
    esac
}}

"""
