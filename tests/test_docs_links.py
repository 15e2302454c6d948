"""The links the package gives users lead to the installed release's own docs.

A system check's hint names a page and an anchor of the docs: they must be those of the
version that raised it (not latest, which describes main), and exist in its docs.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import django
import pytest
from django.core.checks import CheckMessage

import django_thread
from django_thread import _connections
from django_thread._connections import docs_version
from django_thread.checks import (
    database_messages,
    pool_check_error,
    settings_messages,
    tasks_messages,
)
from tests.settings import database

HOSTED = re.compile(r"https://django-thread\.readthedocs\.io/en/([^/\s]+)/([\w/.-]+)#([\w-]+)")
DOCS = Path(__file__).resolve().parent.parent / "docs"


def every_message() -> list[CheckMessage]:
    server = database("test", "postgresql")
    messages = [
        *settings_messages({"HEALTH_CHECK_WINDOW": -1}),
        *database_messages({"w001": {**server, "CONN_MAX_AGE": 0}}),
        *database_messages({"w002": {**server, "CONN_MAX_AGE": None}}),
        pool_check_error("default"),
    ]
    if django.VERSION >= (6, 0):
        backend = "django_thread.tasks.ThreadPoolBackend"
        messages += tasks_messages({"default": {"BACKEND": backend, "OPTIONS": {"X": 1}}})
    return messages


def links() -> list[tuple[str, re.Match[str]]]:
    found = [(m.id or "", HOSTED.search(m.hint or "")) for m in every_message()]
    return [(check_id, match) for check_id, match in found if match]


def test_every_check_links_to_the_installed_releases_docs() -> None:
    found = links()
    expected = {"django_thread.E001", "django_thread.W001", "django_thread.W002"}
    expected |= {"django_thread.E002"}
    if django.VERSION >= (6, 0):
        expected |= {"django_thread.E003"}
    assert {check_id for check_id, _ in found} == expected
    for check_id, match in found:
        assert match.group(1) == docs_version(), check_id
        assert match.group(3) == check_id.replace("_", "-").replace(".", "-").lower()


def test_a_release_links_to_its_own_version_and_a_development_build_to_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert docs_version("no-such-distribution-here") == "latest"
    for installed, expected in [
        ("0.3.0", "0.3.0"),
        ("0.3.0rc1", "0.3.0rc1"),
        ("0.3.0.dev2", "latest"),
        ("0.3.0+g1a2b3c", "latest"),
    ]:
        monkeypatch.setattr(_connections, "version", lambda _name, v=installed: v)
        assert docs_version() == expected


def test_this_checkout_links_to_its_version() -> None:
    try:
        installed = version("django-thread")
    except PackageNotFoundError:
        pytest.skip("django-thread is not installed: its links go to latest")
    if ".dev" in installed or "+" in installed:
        pytest.skip(f"{installed} is a development build: its links go to latest")
    assert _connections.CHECKS_URL.startswith(
        f"https://django-thread.readthedocs.io/en/{installed}/"
    )


def test_each_link_names_a_page_and_an_anchor_the_docs_have() -> None:
    if not DOCS.is_dir():
        pytest.skip("no docs/ beside tests/ (the wheel gate copies tests/ alone)")
    for check_id, match in links():
        source = DOCS / Path(match.group(2)).with_suffix(".md")
        assert source.is_file(), (check_id, match.group(2))
        # A MyST target: `(django-thread-w001)=` right above the check's heading.
        assert f"\n({match.group(3)})=\n" in source.read_text(), (check_id, match.group(3))


def test_no_module_spells_out_a_docs_version() -> None:
    # Our links are built from DOCS_URL; a Django docs link would name the running
    # Django's major.minor. A version written out goes stale at the next release.
    spelled = re.compile(
        r"(?:readthedocs\.io|docs\.djangoproject\.com)/en/(?!\{)[^\s\"']*", re.IGNORECASE
    )
    package = Path(django_thread.__file__).parent
    found = [
        f"{path.name}: {match.group(0)}"
        for path in sorted(package.rglob("*.py"))
        for match in spelled.finditer(path.read_text())
    ]
    assert found == []
