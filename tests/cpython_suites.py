"""CPython's own tests of ThreadPoolExecutor and Thread, with ours in place of the stdlib's.

    python -m tests.cpython_suites [--testsuite DIR]

Runs the thread-pool tests of ``test.test_concurrent_futures`` (where the interpreter
has them) and the thread tests of ``test.test_threading`` twice, each in a fresh
interpreter: once as they are, once with :class:`django_thread.ThreadPoolExecutor` and
:class:`django_thread.Thread` substituted (Django configured, the app installed). Fails
when ours fails a test the stdlib passes in the same run, or when the two runs did not
run the same tests. *DIR* is where a ``test`` package lives when the interpreter's own
has none (Debian's ``libpython3.X-testsuite`` installs it in ``/usr/lib/python3.X``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

THREADING_CASES = ("ThreadTests", "ThreadingExceptionTests", "ExceptHookTests")


def use_testsuite(directory: str | None) -> None:
    """Make ``import test`` find the ``test`` package under *directory*."""
    if directory is None:
        return
    # Only the package: the directory also holds a whole stdlib, which must not shadow ours.
    links = Path(tempfile.mkdtemp(prefix="cpython-testsuite-"))
    (links / "test").symlink_to(Path(directory) / "test")
    sys.path.insert(0, str(links))


def substitute() -> None:
    import concurrent.futures  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=["django_thread"],
    )
    django.setup()
    import django_thread  # noqa: PLC0415

    # Before the tests are imported: their base classes read these at import.
    concurrent.futures.ThreadPoolExecutor = django_thread.ThreadPoolExecutor  # type: ignore[misc]
    threading.Thread = django_thread.Thread  # type: ignore[misc]


def thread_pool_cases() -> list[unittest.TestCase]:
    try:
        package = importlib.import_module("test.test_concurrent_futures")
    except ImportError:  # pyenv's 3.12 ships test_threading without it: said in the report
        return []
    if hasattr(package, "__path__"):  # 3.12+: a package, ThreadPoolMixin in its util
        modules = [
            importlib.import_module(f"{package.__name__}.{info.name}")
            for info in pkgutil.iter_modules(package.__path__)
            if info.name.startswith("test_")
        ]
        mixin = importlib.import_module(f"{package.__name__}.util").ThreadPoolMixin
    else:
        modules, mixin = [package], package.ThreadPoolMixin
    loader = unittest.TestLoader()
    cases: list[unittest.TestCase] = []
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, unittest.TestCase)
                and issubclass(value, mixin)
            ):
                cases += loader.loadTestsFromTestCase(value)  # type: ignore[arg-type]
    return cases


def threading_cases() -> list[unittest.TestCase]:
    module = importlib.import_module("test.test_threading")
    loader = unittest.TestLoader()
    cases: list[unittest.TestCase] = []
    for name in THREADING_CASES:
        cases += loader.loadTestsFromTestCase(getattr(module, name))  # type: ignore[arg-type]
    return cases


def run(impl: str, testsuite: str | None) -> dict[str, Any]:
    # CI starts its lanes in the background, where SIGINT is ignored, and an ignored
    # signal stays ignored in every process started below: the tests that interrupt the
    # main thread (test_print_exception_gh_102056) would then wait for ever.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    use_testsuite(testsuite)
    if impl == "django_thread":
        substitute()
    support: Any = importlib.import_module("test.support")  # CPython's own: not typed
    support.verbose = False
    pool_cases = thread_pool_cases()
    suite = unittest.TestSuite([*pool_cases, *threading_cases()])
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
    failed = [case.id() for case, _ in [*result.failures, *result.errors]]
    skipped = [case.id() for case, _ in result.skipped]
    return {
        "ran": result.testsRun,
        "failed": sorted(failed),
        "skipped": len(skipped),
        "pool_suite": bool(pool_cases),
    }


def compare(testsuite: str | None) -> int:
    outcomes = {}
    for impl in ("stdlib", "django_thread"):
        command = [sys.executable, "-m", "tests.cpython_suites", "--impl", impl]
        if testsuite:
            command += ["--testsuite", testsuite]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
        lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
        if not lines:
            print(f"{impl}: the run did not finish\n{done.stderr[-4000:]}")
            return 1
        outcomes[impl] = json.loads(lines[-1])
    stdlib, ours = outcomes["stdlib"], outcomes["django_thread"]
    version = ".".join(map(str, sys.version_info[:3]))
    print(
        f"CPython {version}: stdlib ran {stdlib['ran']}, failed {len(stdlib['failed'])}; "
        f"django_thread ran {ours['ran']}, failed {len(ours['failed'])}"
    )
    if not stdlib["pool_suite"]:
        print("  test.test_concurrent_futures is not on this interpreter: test_threading only")
    ours_only = sorted(set(ours["failed"]) - set(stdlib["failed"]))
    for test_id in ours_only:
        print(f"  fails with django_thread only: {test_id}")
    if stdlib["ran"] == 0 or stdlib["ran"] != ours["ran"]:
        print("  the two runs did not run the same tests")
        return 1
    return 1 if ours_only else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["stdlib", "django_thread"])
    parser.add_argument("--testsuite", help="a directory holding a 'test' package")
    args = parser.parse_args()
    if args.impl is None:
        return compare(args.testsuite)
    print(json.dumps(run(args.impl, args.testsuite)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
