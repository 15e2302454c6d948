"""Development tasks: ``python3 -m nox -s <session>`` (``nox -l`` lists them).

Database servers are not started here: the tests use the PostgreSQL and MariaDB
servers given by DJANGO_THREAD_TEST_HOST/PORT/USER/PASSWORD (defaults in
tests/settings.py) and skip with a reason when one is unreachable, unless CI is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typing", "tests"]
# uv would otherwise try to download interpreters this machine does not have.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
DATABASES = ["sqlite", "postgresql", "mariadb"]
# Django 5.2 LTS and the newest 6.x; Django 6 needs Python 3.12 or newer.
DJANGOS = {"5.2": "django>=5.2,<5.3", "6.1": "django>=6.1,<6.2"}
MATRIX = [
    (python, django)
    for python in PYTHONS
    for django in DJANGOS
    if not (django.startswith("6") and python == "3.11")
]
# The entry points of each example project: management commands that exit non-zero
# when what the project demonstrates did not happen.
EXAMPLE_COMMANDS = {
    "conn_max_age": [["connreport"]],
    "failure_scenarios": [["failures"]],
    "migrating": [["digest", "--variant", v] for v in ("legacy", "modern", "third-party")],
    "tasks": [["waysout"]],
}
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def install_for(session: nox.Session, database: str, *extra: str) -> None:
    requirements = [*group("tests"), *extra]
    if database == "postgresql":
        requirements += group("postgresql")
    elif database == "mariadb":
        if not (shutil.which("mariadb_config") or shutil.which("mysql_config")):
            reason = "mysqlclient needs the MariaDB client headers (libmariadb-dev)"
            if IN_CI:
                session.error(reason)
            session.skip(reason)
        requirements += group("mariadb")
    session.install("-e", ".", *requirements)


def run_pytest(session: nox.Session, database: str, *args: str) -> None:
    session.run(
        "pytest",
        *args,
        *session.posargs,
        env={"DJANGO_THREAD_TEST_DB": database},
        # pytest exits 5 when no test ran: that is a failure, not a pass.
        success_codes=[0],
    )


@nox.session(python=None)
@nox.parametrize("database", DATABASES)
def tests(session: nox.Session, database: str) -> None:
    """The whole suite, fault injection and load included, on one database."""
    install_for(session, database)
    run_pytest(session, database)


@nox.session
@nox.parametrize(("python", "django"), MATRIX)
@nox.parametrize("database", DATABASES)
def matrix(session: nox.Session, django: str, database: str) -> None:
    """Everything but the slow fault and load tests, per Python x Django x database."""
    install_for(session, database, DJANGOS[django])
    run_pytest(session, database, "-m", "not slow", "-q")


EXAMPLES = sorted(p.parent.name for p in Path("examples").glob("*/manage.py"))
DATABASE_URLS = {
    "sqlite": "",  # each example's embedded SQLite default
    "postgresql": os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}


@nox.session(python=None)
def demo(session: nox.Session) -> None:
    """The README's demo: plain threads vs django_thread on an embedded SQLite file."""
    session.install("-e", ".", *group("examples"))
    session.chdir("examples/conn_max_age")
    session.run(
        "python",
        "manage.py",
        "connreport",
        "--setting",
        "CONN_MAX_AGE=0",
        "--setting",
        "CONN_MAX_AGE=None, checks",
        env={"DATABASE_URL": ""},
    )


@nox.session(python=None)
@nox.parametrize("database", DATABASES)
def examples(session: nox.Session, database: str) -> None:
    """Run every example project's checks, command and tests on one database."""
    install_for(session, database, *group("examples"))
    env = {"DATABASE_URL": DATABASE_URLS[database]}
    for name in EXAMPLES:
        session.log(f"example: {name} on {database}")
        session.chdir(Path(__file__).parent / "examples" / name)
        session.run("python", "manage.py", "check", "--fail-level", "WARNING", env=env)
        session.run("python", "manage.py", "makemigrations", "--check", "--dry-run", env=env)
        for command in EXAMPLE_COMMANDS[name]:
            session.run("python", "manage.py", *command, env=env)
        session.run("pytest", "-q", env=env, success_codes=[0])


@nox.session(python=None)
def docs(session: nox.Session) -> None:
    """Build the site strictly (-n -W): offline in CI, with intersphinx where reachable."""
    session.install("-e", ".", *group("docs"))
    env = {"DOCS_OFFLINE": "1"} if IN_CI else {}
    session.run(
        "sphinx-build",
        "-n",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
        env=env,
    )


@nox.session(python=None)
def rtd(session: nox.Session) -> None:
    """Build the docs as Read the Docs would: .readthedocs.yaml's jobs, a fresh venv."""
    session.install(*group("docs-ci"))
    env = {"DOCS_OFFLINE": "1"} if IN_CI else {}
    session.run("python", ".ci/rtd_build.py", *session.posargs, env=env)


@nox.session(python=None)
def browser(session: nox.Session) -> None:
    """Render every built page in headless Chromium at 1280 and 390 px; screenshots kept.

    Needs Debian's chromium (.ci/run installs it) and a built site (`nox -s docs`).
    """
    if not shutil.which("chromium"):
        session.error("chromium is missing: apt-get install -y chromium")
    if not Path("docs/_build/html/index.html").is_file():
        session.error("no built site: run `nox -s docs` first")
    session.run(
        "python", ".ci/browser_check.py", "docs/_build/html", "--screens",
        ".ci-output/screens", *session.posargs,
    )  # fmt: skip


@nox.session(python=None)
@nox.parametrize("database", DATABASES)
def docs_tests(session: nox.Session, database: str) -> None:
    """Run every example in the docs (Sybil) against one database."""
    install_for(session, database, *group("docs-tests"))
    session.run(
        "pytest",
        "docs",
        "-p",
        "no:doctest",
        "--ds=cookbook.settings",
        *session.posargs,
        env={"DJANGO_THREAD_TEST_DB": database},
        success_codes=[0],
    )


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """Benchmarks against the stdlib; `-- --quick` for CI's few-second check.

    One session per Python, since the per-task overhead differs between them.
    `nox -s bench-3.12 -- --publish` reruns the full suite and regenerates
    docs/benchmarks/ (the docs publish Python 3.12's).
    """
    install_for(session, "mariadb", *group("postgresql"), *group("bench"))
    session.run("python", "-m", "tests.benchmark", *session.posargs)


@nox.session(python="3.12")
def bench_tasks(session: nox.Session) -> None:
    """django_thread.tasks against ImmediateBackend and django-tasks-local; `-- --quick`."""
    session.install("-e", ".", *group("bench-tasks"))
    session.run("python", "-m", "tests.benchmark_tasks", *session.posargs)


@nox.session(python=None)
def lint(session: nox.Session) -> None:
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=None)
def typing(session: nox.Session) -> None:
    session.install("-e", ".", *group("typing"))
    session.run("mypy")
