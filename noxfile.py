"""Development tasks: ``python3 -m nox -s <session>`` (``nox -l`` lists them).

Database servers are not started here: the tests use the PostgreSQL and MariaDB
servers given by DJANGO_THREAD_TEST_HOST/PORT/USER/PASSWORD (defaults in
tests/settings.py) and skip with a reason when one is unreachable, unless CI is set.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typing", "tests"]
# uv would otherwise try to download interpreters this machine does not have.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
# This machine's Debian has no 3.14 or 3.15: the `newest` sessions run them in a Debian
# sid chroot (.ci/sid-pythons). The other sessions use the host's interpreters.
SID_PYTHONS = ["3.14", "3.15"]
HOST_PYTHONS = [python for python in PYTHONS if python not in SID_PYTHONS]
DATABASES = ["sqlite", "postgresql", "mariadb"]
# Every Django that Django still supports: 5.2 LTS, 6.0 and 6.1, oldest first; Django 6
# needs Python 3.12 or newer.
DJANGOS = {"5.2": "django>=5.2,<5.3", "6.0": "django>=6.0,<6.1", "6.1": "django>=6.1,<6.2"}
NEWEST_DJANGO = list(DJANGOS)[-1]
# Every Python and every Django runs the suite on every database: 3.11 with 5.2 in the
# `tests` session, 3.14 and 3.15 with 6.1 in `newest`, and the cells below. What a
# database server sees depends on Django's backend, not on Python: the server lanes run
# the two cells that add a Django (6.0, whose native pool refuses a `check` of the
# user's) or a Python, and SQLite, the cheapest, runs 5.2 and 6.1 on 3.12 and 3.13 too,
# with the stress tests (test_stress.py), which are about Python's threads.
MATRIX = [
    ("3.12", "6.0", "sqlite"),
    ("3.12", "6.1", "sqlite"),
    ("3.13", "5.2", "sqlite"),
    ("3.13", "6.1", "sqlite"),
    ("3.12", "6.0", "postgresql"),
    ("3.13", "6.1", "postgresql"),
    ("3.12", "6.0", "mariadb"),
    ("3.13", "6.1", "mariadb"),
]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
# The docs' dependencies, pinned for both this machine and Read the Docs, so that a new
# Sphinx (or theme, or extension) release cannot change or break the build unannounced.
DOCS_CONSTRAINTS = ".ci/docs-constraints.txt"
# Where `package` leaves the sdist and the wheel for `wheel_tests`.
DIST = Path("dist")
# Every pytest run of the suite writes a JUnit XML file here, for `guarantees`
# (.ci/check_guarantees.py): each test the guarantees page names must have run and passed.
JUNIT = Path(".ci-results") / "junit"


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def test_requirements(session: nox.Session, database: str) -> list[str]:
    """What the test suite needs on *database*: its group and the database's driver."""
    requirements = group("tests")
    if database == "postgresql":
        requirements += group("postgresql")
    elif database == "mariadb":
        need_mariadb_headers(session)
        requirements += group("mariadb")
    return requirements


def need_mariadb_headers(session: nox.Session) -> None:
    if not (shutil.which("mariadb_config") or shutil.which("mysql_config")):
        reason = "mysqlclient needs the MariaDB client headers (libmariadb-dev)"
        if IN_CI:
            session.error(reason)
        session.skip(reason)


def install_for(session: nox.Session, database: str, *extra: str) -> None:
    session.install("-e", ".", *test_requirements(session, database), *extra)


def junit_xml(name: str) -> str:
    """pytest's option writing this run's JUnit XML file, named after *name*."""
    file = re.sub(r"[^\w.]+", "-", name).strip("-") + ".xml"
    return f"--junitxml={JUNIT / file}"


def run_pytest(session: nox.Session, database: str, *args: str) -> None:
    # Under coverage, each run writing its own data file (parallel = true) in the
    # repository: `nox -s coverage` combines them, whichever sessions ran. Each run
    # writes its JUnit XML file too (one per session and database): `nox -s guarantees`.
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        junit_xml(f"{session.name}-{database}"),
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
    install_for(session, database, *group("coverage"))
    run_pytest(session, database)
    if database == "sqlite":
        # share_connections() on Django's default test database, in memory (the rest
        # of the suite needs a file: it counts the file's open handles).
        run_pytest(session, "sqlite-memory", "tests/test_testing.py")


@nox.session
@nox.parametrize(("python", "django", "database"), MATRIX)
def matrix(session: nox.Session, django: str, database: str) -> None:
    """Everything but the slow fault and load tests, per Python x Django x database."""
    install_for(session, database, DJANGOS[django], *group("coverage"))
    selected = "not slow or stress" if database == "sqlite" else "not slow"
    run_pytest(session, database, "-m", selected, "-q")


@nox.session(python=None)
@nox.parametrize("version", SID_PYTHONS)
@nox.parametrize("database", DATABASES)
def newest(session: nox.Session, version: str, database: str) -> None:
    """The whole suite on Python 3.14 / 3.15 with the newest Django, in a Debian sid chroot.

    .ci/sid-pythons provisions the chroot once (root needed) into
    /var/cache/django-thread/sid, or DJANGO_THREAD_SID_ROOT, and reuses it.
    """
    in_sid(
        session,
        "test",
        version,
        database,
        # Relative: in the chroot, pytest runs in the repository, mounted at /src.
        junit_xml(f"newest-{version}-{database}"),
        *session.posargs,
        env={"DJANGO_THREAD_DJANGO": DJANGOS[NEWEST_DJANGO], "DJANGO_THREAD_SID_COVERAGE": "1"},
    )


def in_sid(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    """.ci/sid-pythons with *args*: it needs root, which CI has."""
    if os.geteuid() != 0:
        reason = "the sid chroot needs root (debootstrap, chroot, mount)"
        if IN_CI:
            session.error(reason)
        session.skip(reason)
    session.run(str(Path(__file__).parent / ".ci" / "sid-pythons"), *args, env=env, external=True)


@nox.session(python=None)
@nox.parametrize("version", SID_PYTHONS)
def bench_newest(session: nox.Session, version: str) -> None:
    """Benchmarks on Python 3.14 / 3.15, in the sid chroot (see `newest` and `bench`)."""
    in_sid(session, "bench", version, *session.posargs)


@nox.session(python=HOST_PYTHONS)
def cpython_suites(session: nox.Session) -> None:
    """CPython's thread-pool and thread tests with our classes substituted for the stdlib's.

    Fails on a test ours fails and the stdlib passes in the same run. The interpreter's
    own ``test`` package, else Debian's (libpython3.X-testsuite, in /usr/lib/python3.X).
    """
    version = session.python
    assert isinstance(version, str)
    django = DJANGOS["5.2"] if version == "3.11" else DJANGOS[NEWEST_DJANGO]
    session.install("-e", ".", django)
    args = []
    if not _importable(session, "test.test_concurrent_futures"):
        debian = Path(f"/usr/lib/python{version}")
        if (debian / "test" / "test_threading.py").exists():  # Debian's suite has both
            args = ["--testsuite", str(debian)]
        elif not _importable(session, "test.test_threading"):
            session.skip(f"no CPython test suite for Python {version} on this machine")
        # Else pyenv's 3.12, which has test_threading only (Debian has no 3.12): the run
        # says it checked the thread tests only.
    session.run("python", "-m", "tests.cpython_suites", *args)


def _importable(session: nox.Session, module: str) -> bool:
    probe = f"try:\n import {module}\nexcept ImportError:\n print('none')"
    return "none" not in str(session.run("python", "-c", probe, silent=True))


@nox.session(python=None)
@nox.parametrize("version", SID_PYTHONS)
def cpython_suites_sid(session: nox.Session, version: str) -> None:
    """cpython_suites on Python 3.14 / 3.15, in the Debian sid chroot."""
    in_sid(
        session, "test", version, "cpython", env={"DJANGO_THREAD_DJANGO": DJANGOS[NEWEST_DJANGO]}
    )


@nox.session(python=None)
def coverage(session: nox.Session) -> None:
    """Branch coverage of django_thread/, combined over every run since the last combine.

    Run the test sessions first (`tests`, `matrix`, `newest`); fails under 95%.
    """
    session.install(*group("coverage"))
    if not list(Path().glob(".coverage.*")):
        session.error("no coverage data: run the tests, matrix or newest sessions first")
    session.run("coverage", "combine")
    session.run("coverage", "report")


@nox.session(python=None)
def guarantees(session: nox.Session) -> None:
    """Every test docs/reference/guarantees.md names ran, passed, and was not always skipped.

    Reads the JUnit XML files in .ci-results/junit/ that the test sessions wrote (`tests`,
    `matrix`, `newest`): run them first. The checker's own self-test runs first.
    """
    session.install(*group("tests"))
    session.run("python", ".ci/check_guarantees.py", "--self-test")
    session.run("python", ".ci/check_guarantees.py", "--junit", str(JUNIT))


@nox.session(python=None)
def package(session: nox.Session) -> None:
    """The release gate, first half: build the sdist and the wheel, and check them.

    The sdist is built first and the wheel from it, so the sdist is complete too. The
    `wheel_tests` sessions then test the wheel left in dist/.
    """
    session.install("build", "twine", "check-wheel-contents")
    shutil.rmtree(DIST, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(DIST))
    [wheel] = DIST.glob("*.whl")
    [sdist] = DIST.glob("*.tar.gz")
    session.run("twine", "check", "--strict", str(wheel), str(sdist))
    session.run("check-wheel-contents", str(wheel))
    names = zipfile.ZipFile(wheel).namelist()
    if "django_thread/py.typed" not in names:
        session.error(f"{wheel} has no django_thread/py.typed: type checkers would ignore it")


@nox.session(python=None)
@nox.parametrize("database", DATABASES)
def wheel_tests(session: nox.Session, database: str) -> None:
    """The release gate, second half: the built wheel, in a clean venv, tested on one database.

    Run `nox -s package` first. The tests run from a copy outside the repository,
    against the installed wheel, so the source tree cannot stand in for it.
    """
    wheels = list(DIST.glob("*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {DIST}/, found {len(wheels)}: run `nox -s package`")
    [wheel] = wheels
    requirements = test_requirements(session, database)
    with tempfile.TemporaryDirectory(prefix="django-thread-wheel-") as scratch:
        root = Path(scratch)
        venv = root / "venv"
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        # pip, not uv: the clean venv is the stdlib's, as a user would make it.
        session.run(
            python, "-m", "pip", "install", "-q", str(wheel.resolve()), *requirements,
            external=True,
        )  # fmt: skip
        shutil.copytree("tests", root / "tests", ignore=shutil.ignore_patterns("*.sqlite3"))
        shutil.copy("pyproject.toml", root)  # pytest's configuration; there is no source here
        (root / "conftest.py").write_text(WHEEL_GUARD.format(venv=venv.resolve()))
        session.chdir(root)
        # Not -q: the header names the django_thread that was tested. The slow fault and
        # load tests ran against the source in `tests`; this gate is about the package,
        # so it runs the rest unless told otherwise.
        session.run(
            python,
            "-m",
            "pytest",
            *(session.posargs or ["-m", "not slow"]),
            env={"DJANGO_THREAD_TEST_DB": database},
            success_codes=[0],
            external=True,
        )


# The wheel gate's root conftest.py: the run fails unless django_thread is the wheel
# installed in the clean venv (pytest's pythonpath puts "." first: were the source
# tree there, it would be tested instead).
WHEEL_GUARD = """\
from pathlib import Path

import django_thread

INSTALLED = Path(django_thread.__file__).resolve()
assert INSTALLED.is_relative_to("{venv}") and "site-packages" in INSTALLED.parts, INSTALLED


def pytest_report_header():
    return f"django_thread from the wheel: {{INSTALLED}}"
"""


DATABASE_URLS = {
    "sqlite": "",  # each example's embedded SQLite default
    "postgresql": os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}

# examples/tasks also runs on RQ: each database's run gets a Redis database of its own,
# so that CI's lanes (.ci/run), which run the databases at once, never take each
# other's jobs.
REDIS_URLS = {db: f"redis://127.0.0.1:6379/{n}" for n, db in enumerate(DATABASES, start=1)}


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


# Django 6 (examples/tasks, the docs' tasks how-to) needs Python 3.12 or newer.
NEWEST_HOST_PYTHON = HOST_PYTHONS[-1]


# No venv of its own: the checker is stdlib only, run by nox's interpreter, beside the uv
# that CI installs with nox; it makes the venvs.
@nox.session(python=None, venv_backend="none")
@nox.parametrize("database", DATABASES)
def examples(session: nox.Session, database: str) -> None:
    """Every example README's commands as written, each README in a fresh venv, on one database.

    .ci/check_readmes.py runs them (installs, the project's command, its tests), then each
    project's system checks and migrations check in the same venv.
    """
    if database == "mariadb":
        need_mariadb_headers(session)
    session.run(sys.executable, ".ci/check_readmes.py", "--self-test")
    session.run(
        sys.executable, ".ci/check_readmes.py", "--database", database,
        "--database-url", DATABASE_URLS[database], "--python", NEWEST_HOST_PYTHON,
        "--then", "python manage.py check --fail-level WARNING",
        "--then", "python manage.py makemigrations --check --dry-run",
        *session.posargs, env={"REDIS_URL": REDIS_URLS[database]},
    )  # fmt: skip


@nox.session(python=None)
def docs(session: nox.Session) -> None:
    """Build the site strictly (-n -W): offline in CI, with intersphinx where reachable."""
    session.install("-c", DOCS_CONSTRAINTS, "-e", ".", *group("docs"))
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


@nox.session(python=NEWEST_HOST_PYTHON)
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


@nox.session(python=HOST_PYTHONS)
def bench(session: nox.Session) -> None:
    """Benchmarks against the stdlib; `-- --quick` for CI's few-second check.

    One session per Python, since the per-task overhead differs between them.
    `nox -s bench-3.12 -- --publish` reruns the full suite and regenerates
    docs/benchmarks/ (the docs publish Python 3.12's).
    """
    install_for(session, "mariadb", *group("postgresql"), *group("bench"))
    session.run("python", "-m", "tests.benchmark", *session.posargs)


@nox.session(python="3.12")
def bench_asgi(session: nox.Session) -> None:
    """Requests/s and server sessions under uvicorn and daphne, per connection setting.

    `-- --quick` checks that it runs (a few minutes: each measurement starts a server);
    `-- --publish` regenerates docs/benchmarks/asgi.*. Not in CI: too long for it.
    """
    install_for(session, "mariadb", *group("postgresql"), *group("bench"), *group("examples"))
    session.run("python", "-m", "tests.benchmark_asgi", *session.posargs)


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
