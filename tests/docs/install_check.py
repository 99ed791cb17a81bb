"""Stands in for an installer a doc tells you to run: checks that what it installs is here.

The suite's environment is what these commands produce, so re-running them would test the
network, not the docs. ``pip install X`` → distribution X (and its extras) installed;
``pip install -e '.[extra]'`` → this checkout importable, with the extra's requirements;
``apt-get install pkg`` → the package's program on PATH; ``npm ci --prefix DIR`` → DIR has
a lock file and ``node``/``npm`` exist. Exits 1 naming what is missing.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Debian package → the program it puts on PATH.
APT_PROGRAMS = {"sip-tester": "sipp", "chromium": "chromium", "nodejs": "node", "npm": "npm",
                "sox": "sox", "tshark": "tshark", "ffmpeg": "ffmpeg",
                "kamailio": "kamailio", "postgresql": "pg_ctlcluster", "espeak-ng": "espeak-ng",
                "redis-server": "redis-server"}


def which(program: str) -> str | None:
    """The program on PATH, not counting the stand-ins beside this file."""
    shims = str(Path(__file__).resolve().parent / "bin")
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and str(Path(d).resolve()) != shims)
    return shutil.which(program, path=path)


def requirement_name(spec: str) -> tuple[str, list[str]]:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", spec)
    if not m:
        raise SystemExit(f"install_check: cannot read requirement {spec!r}")
    return m[1], [e.strip() for e in (m[2] or "").split(",") if e.strip()]


def missing_distribution(spec: str) -> str | None:
    name, _extras = requirement_name(spec)
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return f"{name} (from {spec!r}) is not installed"
    return None


def check_pip(args: list[str]) -> list[str]:
    if not args or args[0] != "install":
        return [f"pip {' '.join(args)}: only `pip install` is expected in the docs"]
    problems = []
    for arg in (a for a in args[1:] if not a.startswith("-")):
        if arg == "." or arg.startswith(".["):
            import callstream  # the checkout under test

            if not Path(callstream.__file__).resolve().is_relative_to(REPO):
                problems.append(f"callstream imports from {callstream.__file__}, not {REPO}")
            extras = requirement_name("callstream" + arg[1:])[1]
            optional = tomllib.loads((REPO / "pyproject.toml").read_text())[
                "project"]["optional-dependencies"]
            for extra in extras:
                if extra not in optional:
                    problems.append(f"pyproject.toml has no extra {extra!r}")
                    continue
                problems += filter(None, map(missing_distribution, optional[extra]))
        else:
            problems += filter(None, [missing_distribution(arg)])
    return problems


def check_apt(args: list[str]) -> list[str]:
    if args[:1] == ["update"]:
        return []
    if args[:1] != ["install"]:
        return [f"apt-get {' '.join(args)}: only update/install are expected in the docs"]
    problems = []
    for pkg in (a for a in args[1:] if not a.startswith("-")):
        program = APT_PROGRAMS.get(pkg)
        if program is None:
            problems.append(f"apt package {pkg!r}: add the program it installs to "
                            "APT_PROGRAMS in tests/docs/install_check.py")
        elif which(program) is None:
            problems.append(f"{program} (from apt package {pkg}) is not on PATH")
    return problems


def check_npm(args: list[str]) -> list[str]:
    if args[:2] != ["ci", "--prefix"] or len(args) != 3:
        return [f"npm {' '.join(args)}: only `npm ci --prefix DIR` is expected in the docs"]
    problems = [f"{p} is not on PATH" for p in ("node", "npm") if which(p) is None]
    if not (REPO / args[2] / "package-lock.json").is_file():
        problems.append(f"{args[2]}/package-lock.json does not exist")
    return problems


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    check = {"pip": check_pip, "pip3": check_pip, "apt-get": check_apt, "apt": check_apt,
             "npm": check_npm}[tool]
    problems = check(args)
    for problem in problems:
        print(f"[snippet test] {tool} {' '.join(args)}: {problem}", file=sys.stderr)
    if not problems:
        print(f"[snippet test] not re-run, already installed: {tool} {' '.join(args)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
