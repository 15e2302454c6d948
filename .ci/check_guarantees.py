#!/usr/bin/env python3
"""Every guarantee names its tests, and every named test ran and passed.

Reads docs/reference/guarantees.md for the test ids it names (`tests/test_x.py::test_y`,
a parametrized test by its base name) and the JUnit XML files the test lanes wrote
(.ci-results/junit/*.xml, one per pytest run: noxfile.py's run_pytest and the sid
chroot). Fails, one line per problem, when:

- a guarantee (a list item or a table row outside "Not covered") names no test;
- a named test is in no JUnit file (misspelt, renamed, removed, or never collected);
- a named test was skipped in every file (on every database it applies to);
- a named test failed (or errored) in any file.

    python .ci/check_guarantees.py [--page PAGE] [--junit DIR]
    python .ci/check_guarantees.py --self-test   runs pytest on a sample, checks the checks
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "guarantees.md"
JUNIT = ROOT / ".ci-results" / "junit"
TEST_ID = re.compile(r"`(tests/[\w/]+\.py(?:::\w+)+)`")
# Sections whose items are not promises, so name no test.
UNPROVED_SECTIONS = {"Not covered"}


@dataclass
class Outcomes:
    """What the JUnit files say of one test (all its parametrizations)."""

    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def page_ids(text: str) -> tuple[list[str], list[str]]:
    """The test ids *text* names, in order, and the guarantees that name none.

    A guarantee is a list item (with its indented continuation lines) or a table body
    row, in any section but those in UNPROVED_SECTIONS.
    """
    ids = list(dict.fromkeys(TEST_ID.findall(text)))
    unproved: list[str] = []
    section = ""
    item: list[str] = []
    table_row = 0

    def close_item() -> None:
        if item and section not in UNPROVED_SECTIONS and not TEST_ID.search(" ".join(item)):
            unproved.append(f"{section}: {item[0].strip()[:70]}")
        item.clear()

    for line in text.splitlines():
        if line.startswith("#"):
            close_item()
            section = line.lstrip("#").strip()
            continue
        if line.startswith("|"):
            close_item()
            table_row += 1
            is_body = table_row > 2  # the header and the --- row come first
            if is_body and section not in UNPROVED_SECTIONS and not TEST_ID.search(line):
                unproved.append(f"{section}: table row {line[:70]}")
            continue
        table_row = 0
        if line.startswith("- "):
            close_item()
            item.append(line)
        elif item and line.startswith("  ") and line.strip():
            item.append(line)
        else:
            close_item()
    close_item()
    return ids, unproved


def junit_key(test_id: str) -> tuple[str, str]:
    """pytest's JUnit classname and name for a page's test id (name without params)."""
    path, *names = test_id.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *names[:-1]]), names[-1]


def read_junit(files: Iterable[Path]) -> dict[tuple[str, str], Outcomes]:
    """Outcomes per (classname, base name), over every testcase in *files*."""
    seen: dict[tuple[str, str], Outcomes] = {}
    for path in files:
        for case in ET.parse(path).getroot().iter("testcase"):
            name = case.get("name", "").split("[", 1)[0]
            outcomes = seen.setdefault((case.get("classname", ""), name), Outcomes())
            where = f"{path.name}: {case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                outcomes.failed.append(where)
            elif case.find("skipped") is not None:
                skipped = case.find("skipped")
                reason = skipped.get("message", "") if skipped is not None else ""
                outcomes.skipped.append(f"{where} ({reason})")
            else:
                outcomes.passed.append(where)
    return seen


def problems(page_text: str, junit_files: list[Path]) -> tuple[list[str], int]:
    """Every problem found, one line each, and how many test ids the page names."""
    ids, unproved = page_ids(page_text)
    found = [f"a guarantee names no test: {what}" for what in unproved]
    if not ids:
        found.append("the page names no test ids at all")
    if not junit_files:
        return [*found, "no JUnit XML files: run the test lanes first"], len(ids)
    outcomes = read_junit(junit_files)
    for test_id in ids:
        got = outcomes.get(junit_key(test_id))
        if got is None:
            found.append(
                f"{test_id}: in none of the {len(junit_files)} JUnit files "
                "(misspelt, renamed or removed?)"
            )
            continue
        if got.failed:
            found.append(f"{test_id}: failed in {'; '.join(got.failed[:3])}")
        if not got.passed and not got.failed:
            found.append(
                f"{test_id}: skipped in every run ({len(got.skipped)}), e.g. {got.skipped[0]}"
            )
    return found, len(ids)


def check(page: Path, junit_dir: Path) -> int:
    files = sorted(junit_dir.glob("*.xml"))
    found, count = problems(page.read_text(), files)
    for problem in found:
        print(f"check_guarantees: {problem}")
    if found:
        print(f"check_guarantees: FAILED, {len(found)} problem(s) in {page.name}")
        return 1
    print(
        f"check_guarantees: {count} tests named by {page.name} ran and passed "
        f"({len(files)} JUnit files)"
    )
    return 0


SAMPLE_TESTS = """
import pytest

def test_passes():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_parametrized(n):
    pass

@pytest.mark.skip(reason="skipped everywhere")
def test_skipped():
    pass

@pytest.mark.skipif("{lane}" == "one", reason="not on lane one")
def test_skipped_on_one_lane():
    pass

def test_fails():
    assert False

class TestGroup:
    def test_in_a_class(self):
        pass
"""

SAMPLE_PAGE = """
## Promises

- Passes. Proved by: `tests/test_sample.py::test_passes`,
  `tests/test_sample.py::test_parametrized`, `tests/test_sample.py::TestGroup::test_in_a_class`
- Runs on one lane. Proved by: `tests/test_sample.py::test_skipped_on_one_lane`
- A typo. Proved by: `tests/test_sample.py::test_passess`
- Skipped everywhere. Proved by: `tests/test_sample.py::test_skipped`
- Fails. Proved by: `tests/test_sample.py::test_fails`
- Names nothing.

| a | proved by |
| --- | --- |
| row | `tests/test_sample.py::test_passes` |
| row without a test | - |

## Not covered

- Needs no test.
"""


def self_test() -> int:
    """Run pytest on a sample in two lanes, check a page against it, compare."""
    with tempfile.TemporaryDirectory(prefix="check-guarantees-") as scratch:
        root = Path(scratch)
        (root / "tests").mkdir()
        (root / "tests" / "__init__.py").write_text("")
        junit_dir = root / "junit"
        for lane in ("one", "two"):
            (root / "tests" / "test_sample.py").write_text(SAMPLE_TESTS.format(lane=lane))
            done = subprocess.run(
                [
                    sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "no:django", "--rootdir", str(root),
                    f"--junitxml={junit_dir / f'{lane}.xml'}", "tests",
                ],
                cwd=root, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 1:  # one test fails on purpose
                print(done.stdout, done.stderr)
                print(f"check_guarantees --self-test: pytest exited {done.returncode}, not 1")
                return 1
        found, _ = problems(SAMPLE_PAGE, sorted(junit_dir.glob("*.xml")))
    expected = [
        "a guarantee names no test: Promises: - Names nothing.",
        "a guarantee names no test: Promises: table row | row without a test | - |",
        "tests/test_sample.py::test_passess: in none of the 2 JUnit files",
        "tests/test_sample.py::test_skipped: skipped in every run (2)",
        "tests/test_sample.py::test_fails: failed in one.xml: test_fails",
    ]
    missing = [e for e in expected if not any(f.startswith(e) for f in found)]
    unexpected = [f for f in found if not any(f.startswith(e) for e in expected)]
    for line in found:
        print(f"check_guarantees --self-test: reported: {line}")
    if missing or unexpected or len(found) != len(expected):
        print(f"check_guarantees --self-test: FAILED; missing {missing}, unexpected {unexpected}")
        return 1
    print(f"check_guarantees --self-test: the {len(expected)} planted problems, and only those")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", type=Path, default=PAGE)
    parser.add_argument("--junit", type=Path, default=JUNIT, help="directory of *.xml")
    parser.add_argument("--self-test", action="store_true", help="check the checker")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    return check(args.page, args.junit)


if __name__ == "__main__":
    sys.exit(main())
