"""Build the docs the way Read the Docs would, from .readthedocs.yaml, in a fresh venv.

Read the Docs finds its configuration only as `.readthedocs.yaml` at the repository
root, creates a new virtual environment with `build.tools.python`, runs the
`build.jobs` install commands from the checkout root with that environment first on
PATH, then runs Sphinx from the directory of `sphinx.configuration`, with
`-W --keep-going` when `sphinx.fail_on_warning` is set. This script does the same, so
a configuration that would fail there fails here first.

    python .ci/rtd_build.py [--output DIR]

Needs PyYAML; the interpreter named by build.tools.python must be on PATH as pythonX.Y.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".readthedocs.yaml"
# The jobs Read the Docs runs around its own install and build steps, in its order.
# Overriding `build.jobs.build` or `build.commands` replaces the Sphinx step itself,
# which this script does not imitate: refuse rather than build something else.
JOBS = ["post_checkout", "pre_system_dependencies", "post_system_dependencies",
        "pre_create_environment", "post_create_environment", "pre_install", "install",
        "post_install", "pre_build"]  # fmt: skip


def fail(message: str) -> None:
    sys.exit(f"rtd_build: {message}")


def load_config() -> dict[str, Any]:
    if not CONFIG.is_file():
        fail(f"{CONFIG.name} is missing: Read the Docs would find no configuration")
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    if config.get("version") != 2:
        fail("only configuration version 2 is supported by Read the Docs")
    build = config.get("build") or {}
    if "commands" in build or "build" in (build.get("jobs") or {}):
        fail("build.commands / build.jobs.build replace Sphinx; this check cannot follow")
    if "python" in config and "install" in config["python"]:
        fail("python.install is not imitated here; use build.jobs.install")
    if not (config.get("sphinx") or {}).get("configuration"):
        fail("sphinx.configuration is required by Read the Docs")
    return config


def run(command: str | list[str], cwd: Path, env: dict[str, str]) -> None:
    shown = command if isinstance(command, str) else " ".join(command)
    print(f"rtd_build: [{cwd.relative_to(ROOT) if cwd != ROOT else '.'}] $ {shown}", flush=True)
    subprocess.run(command, cwd=cwd, env=env, check=True, shell=isinstance(command, str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / ".ci-output" / "rtd")
    args = parser.parse_args()
    config = load_config()
    python = f"python{config['build']['tools']['python']}"
    if not shutil.which(python):
        fail(f"{python} (build.tools.python) is not on PATH")

    with tempfile.TemporaryDirectory(prefix="rtd-venv-") as tmp:
        venv = Path(tmp) / "venv"
        output = args.output.resolve()
        shutil.rmtree(output, ignore_errors=True)
        # The caller's environment (the package index, proxies, DOCS_OFFLINE), minus
        # the virtualenv this script runs in: nothing installed there may leak in.
        own_bin = str(Path(sys.prefix) / "bin")
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        path = [p for p in os.environ["PATH"].split(os.pathsep) if p != own_bin]
        env |= {
            "PATH": os.pathsep.join([str(venv / "bin"), *path]),
            "VIRTUAL_ENV": str(venv),
            "READTHEDOCS": "True",
            "READTHEDOCS_VIRTUALENV_PATH": str(venv),
            "READTHEDOCS_OUTPUT": str(output),
            "READTHEDOCS_VERSION": "latest",
            "READTHEDOCS_CANONICAL_URL": "https://django-thread.readthedocs.io/en/latest/",
        }
        run([python, "-m", "venv", str(venv)], ROOT, env)
        jobs = config["build"].get("jobs") or {}
        for job in JOBS:
            for command in jobs.get(job) or []:
                run(command, ROOT, env)
        sphinx = config["sphinx"]
        conf_dir = (ROOT / sphinx["configuration"]).parent
        strict = ["-W", "--keep-going"] if sphinx.get("fail_on_warning") else []
        builder = sphinx.get("builder", "html")
        run(
            [str(venv / "bin" / "python"), "-m", "sphinx", "-T", *strict, "-b", builder,
             "-d", str(output / "doctrees"), "-D", "language=en", ".", str(output / "html")],
            conf_dir,
            env,
        )  # fmt: skip
    print(f"rtd_build: built {output / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
