#!/usr/bin/env python3
"""Run each example README's commands as written, in a fresh venv, on one database.

The convention, which a README follows to be checked:

- Commands are the lines of ```console blocks that start with the prompt `$ ` (a line
  ending in a backslash continues on the next). Other lines in the block are output.
  A console block with no `$ ` line is an error: it would be checked by nobody.
- Every command runs in the README's folder, in its own bash, in a venv made for that
  README alone (activated: `python` and `pip` are the venv's), in order; the first that
  exits non-zero stops the README and is reported with its README line.
- An HTML comment right before a block (blank lines between are fine) says where it runs:
  `<!-- readme-check: postgresql mariadb -->` only on those databases' lanes,
  `<!-- readme-check: skip "reason" -->` nowhere (a server that runs until stopped, a
  browser: the README says so in its text too). Unmarked blocks run on every lane.
- The lane's DATABASE_URL (unset for sqlite) is in every command's environment, and a
  command that starts with `DATABASE_URL=<url> ` has that URL replaced by the lane's:
  the same in CI (the README's URLs are CI's), another database name on a shared
  machine. Its scheme must be the lane's.

`pip` in the venv is uv's pip interface by default (`--pip uv`): the same requirements,
resolved from uv's cache in a second instead of pip's tens; `--pip pip` seeds a real pip.

    python .ci/check_readmes.py --database postgresql --database-url URL [README ...]
    python .ci/check_readmes.py --database sqlite --list     the commands, not run
    python .ci/check_readmes.py --self-test                  checks the parser
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("sqlite", "postgresql", "mariadb")
SCHEMES = {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mariadb"}
MARKER = re.compile(r"<!--\s*readme-check:\s*(.*?)\s*-->")
INLINE_URL = re.compile(r"^DATABASE_URL=(\S+)\s")
# No README command should take this long; one that serves forever must be marked skip.
TIMEOUT = 600


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line of the `$ ` prompt in the README
    text: str
    lanes: tuple[str, ...]


class ReadmeError(ValueError):
    """The README breaks the convention (not: a command failed)."""


def parse(text: str, name: str = "README.md") -> list[Command]:
    """The commands of *text*'s console blocks, each with the lanes it runs on."""
    commands: list[Command] = []
    marker: str | None = None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        index += 1
        if found := MARKER.fullmatch(stripped):
            marker = found.group(1)
            continue
        if not stripped.startswith("```"):
            if stripped:
                marker = None  # a marker applies to the block right after it only
            continue
        start = index
        body: list[tuple[int, str]] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append((index + 1, lines[index].strip()))
            index += 1
        index += 1
        if stripped != "```console":
            marker = None
            continue
        lanes = _lanes(marker, f"{name}:{start - 1}")
        marker = None
        block = _commands(body, lanes)
        if not block:
            raise ReadmeError(f"{name}:{start}: a console block with no `$ ` command")
        commands += block
    return commands


def _lanes(marker: str | None, where: str) -> tuple[str, ...]:
    if marker is None:
        return DATABASES
    if marker == "skip" or marker.startswith("skip "):
        if not marker.removeprefix("skip").strip(' "'):
            raise ReadmeError(f'{where}: `skip` needs a reason: skip "why"')
        return ()
    lanes = tuple(marker.split())
    if unknown := [lane for lane in lanes if lane not in DATABASES]:
        raise ReadmeError(f"{where}: unknown readme-check lane {unknown}: {DATABASES} or skip")
    return lanes


def _commands(body: list[tuple[int, str]], lanes: tuple[str, ...]) -> list[Command]:
    commands: list[Command] = []
    pending: tuple[int, str] | None = None
    for number, line in body:
        if pending is not None:
            pending = (pending[0], pending[1][:-1].rstrip() + " " + line)
        elif line.startswith("$ "):
            pending = (number, line[2:].strip())
        if pending is not None and not pending[1].endswith("\\"):
            commands.append(Command(pending[0], pending[1], lanes))
            pending = None
    return commands


def for_lane(command: Command, database: str, url: str, where: str) -> str:
    """*command*'s text as run on *database*'s lane, whose DATABASE_URL is *url*."""
    found = INLINE_URL.match(command.text)
    if not found:
        return command.text
    scheme = found.group(1).split("://", 1)[0]
    if SCHEMES.get(scheme) != database or not url:
        raise ReadmeError(f"{where}: a {scheme} URL in a block that runs on {database}")
    return f"DATABASE_URL={shlex.quote(url)} " + command.text[found.end() :]


def uv_binary() -> str:
    """uv's own binary, not a shim: the commands run without pyenv's PATH."""
    try:
        # The package `pip install uv` installs (CI's) knows where its binary is.
        return str(importlib.import_module("uv").find_uv_bin())
    except ImportError:
        found = shutil.which("uv")
        if not found:
            raise SystemExit("check_readmes needs uv: python -m pip install uv") from None
        return found


def make_venv(venv: Path, python: str, pip: str) -> dict[str, str]:
    """A fresh venv at *venv*, and the environment of a shell that activated it."""
    env = dict(os.environ)
    # What would point Python, uv or Django elsewhere (nox sets UV_PYTHON to its venv).
    for variable in (
        "PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE", "UV_PYTHON",
        "UV_PROJECT_ENVIRONMENT", "UV_SYSTEM_PYTHON", "CONDA_PREFIX", "VIRTUAL_ENV",
    ):  # fmt: skip
        env.pop(variable, None)
    uv = uv_binary()
    seed = ["--seed"] if pip == "pip" else []
    command = [uv, "venv", "-q", *seed, "--python", python, str(venv)]
    subprocess.run(command, env=env, check=True)
    if pip == "uv":
        shim = venv / "bin" / "pip"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(uv)} pip "$@"\n')
        shim.chmod(0o755)
    env["VIRTUAL_ENV"] = str(venv)
    if env.get("PYTHONDONTWRITEBYTECODE"):
        # Python may not cache what it compiles: without this every command would compile
        # Django anew. So pip's way, every module compiled as it is installed (uv's own
        # way, lazily by Python, compiles only the modules used, once).
        env["UV_COMPILE_BYTECODE"] = "1"
    # The venv, then the system's default PATH only: a tool the README forgot to install
    # must not be found in another venv or behind pyenv's shims.
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.confstr('CS_PATH')}"
    return env


def run_readme(
    readme: Path, *, database: str, url: str, python: str, pip: str, then: list[str]
) -> list[str]:
    """Run *readme*'s commands for *database*; the failures, as `README:line: ...`."""
    name = str(readme.relative_to(ROOT)) if readme.is_relative_to(ROOT) else str(readme)
    try:
        commands = [c for c in parse(readme.read_text(), name) if database in c.lanes]
        texts = [(c.line, for_lane(c, database, url, f"{name}:{c.line}")) for c in commands]
    except ReadmeError as error:
        return [str(error)]
    if not texts:
        return [f"{name}: no command runs on {database}"]
    texts += [(0, command) for command in then]
    with tempfile.TemporaryDirectory(prefix="readme-check-") as scratch:
        env = make_venv(Path(scratch) / "venv", python, pip)
        env.pop("DATABASE_URL", None)
        if url:
            env["DATABASE_URL"] = url
        for line, text in texts:
            where = f"{name}:{line}" if line else f"{name} (after the README, --then)"
            print(f"\n--- {where} [{database}]\n$ {text}", flush=True)
            started = time.monotonic()
            try:
                done = subprocess.run(
                    ["bash", "-c", text], cwd=readme.parent, env=env, timeout=TIMEOUT, check=False
                )
            except subprocess.TimeoutExpired:
                return [f"{where}: still running after {TIMEOUT} s: $ {text}"]
            print(f"--- {time.monotonic() - started:.1f} s", flush=True)
            if done.returncode:
                return [f"{where}: exited {done.returncode} on {database}: $ {text}"]
    return []


def self_test() -> int:
    """Check the parser against a README that uses every part of the convention."""
    sample = (
        "Intro `python inline.py` is prose.\n\n"
        "```console\n$ pip install -e ../..\n$ python manage.py one \\\n  --flag\noutput\n```\n\n"
        '<!-- readme-check: skip "serves until stopped" -->\n\n'
        "```console\n$ uvicorn app\n```\n"
        "<!-- readme-check: postgresql -->\n"
        "```console\n$ DATABASE_URL=postgres://u@h:5432/test python manage.py two\n```\n"
        "```python\n$ not a command\n```\n"
        "```console\n$ pytest\n```\n"
    )
    every = DATABASES
    expected = [
        Command(4, "pip install -e ../..", every),
        Command(5, "python manage.py one --flag", every),
        Command(13, "uvicorn app", ()),
        Command(17, "DATABASE_URL=postgres://u@h:5432/test python manage.py two", ("postgresql",)),
        Command(23, "pytest", every),
    ]
    problems = []
    if (found := parse(sample)) != expected:
        problems.append(f"parsed {found}")
    lane = for_lane(expected[3], "postgresql", "postgres://me@h/mine", "x")
    if lane != "DATABASE_URL=postgres://me@h/mine python manage.py two":
        problems.append(f"lane URL: {lane}")
    broken = {
        "```console\nno prompt\n```\n": "no `$ ` command",
        "<!-- readme-check: skip -->\n```console\n$ x\n```\n": "needs a reason",
        "<!-- readme-check: oracle -->\n```console\n$ x\n```\n": "unknown readme-check lane",
    }
    for text, message in broken.items():
        try:
            parse(text)
            problems.append(f"accepted: {text!r}")
        except ReadmeError as error:
            if message not in str(error):
                problems.append(f"{text!r}: {error}")
    try:
        for_lane(expected[3], "mariadb", "mysql://root@h/mine", "x")
        problems.append("a postgres URL ran on the mariadb lane")
    except ReadmeError:
        pass
    for problem in problems:
        print(f"check_readmes --self-test: FAILED: {problem}")
    if not problems:
        print("check_readmes --self-test: the sample parsed as expected, the broken ones refused")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readmes", nargs="*", type=Path, help="default: examples/*/README.md")
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    parser.add_argument("--database-url", default="", help="the lane's; empty for sqlite")
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument("--pip", choices=("uv", "pip"), default="uv")
    parser.add_argument(
        "--then", action="append", default=[], help="a command to run after each README"
    )
    parser.add_argument("--list", action="store_true", help="print the commands, run none")
    parser.add_argument("--self-test", action="store_true", help="check the parser")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if (args.database == "sqlite") == bool(args.database_url):
        parser.error("--database-url is required for a server, and none for sqlite")
    readmes = [p.resolve() for p in args.readmes] or sorted(ROOT.glob("examples/*/README.md"))
    failures: list[str] = []
    for readme in readmes:
        if args.list:
            for command in parse(readme.read_text(), str(readme)):
                if args.database in command.lanes:
                    print(f"{readme}:{command.line}: $ {command.text}")
            continue
        failures += run_readme(
            readme,
            database=args.database,
            url=args.database_url,
            python=args.python,
            pip=args.pip,
            then=args.then,
        )
    for failure in failures:
        print(f"check_readmes: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
