"""Sphinx configuration for django-thread's documentation."""

from __future__ import annotations

import os
import sys
import zlib
from importlib.metadata import version as package_version
from pathlib import Path

from sphinx.application import Sphinx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cookbook.settings")

import django  # noqa: E402 - needs the path and settings above

django.setup()

project = "django-thread"
author = "django-thread maintainers"
copyright = "2026, django-thread maintainers"
release = package_version("django-thread")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",  # [source] links from the API reference
    "sphinx.ext.napoleon",  # before sphinx_autodoc_typehints, as it asks
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
exclude_patterns = [
    "_build",
    "cookbook",
    "README.md",
    "benchmarks/results.md",
    "benchmarks/asgi.md",
]
nitpicky = True
nitpick_ignore_regex = [
    # Type variables in signatures, which have no page of their own.
    (r"py:.*", r"(typing\.|django_thread\._executor\.)?~?(P|T|Ts)(\.args|\.kwargs)?"),
    # unit_of_work's overloads: the decorated function's type variable, and the
    # context manager it returns (documented with unit_of_work itself).
    (r"py:.*", r"django_thread\._connections\.(F|UnitOfWork)"),
    # How typing renders unions and "..." on some Pythons; no inventory lists them.
    (r"py:data", r"typing\.(Optional|Union)|Ellipsis"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
typehints_defaults = "comma"
always_document_param_types = False

html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_title = f"django-thread {release}"
html_baseurl = os.environ.get("READTHEDOCS_CANONICAL_URL", "")
html_theme_options = {
    "source_repository": "https://github.com/django-thread/django-thread/",
    "source_branch": "main",
    "source_directory": "docs/",
    "top_of_page_buttons": ["view", "edit"],
}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# Intersphinx: the Python and Django docs, online where they can be reached (Read the
# Docs), and otherwise from small local inventories of just the names these docs link
# to, so that an offline build (CI has no internet) still resolves every reference.
# Sphinx tries each location in turn and warns only if all of them fail.
intersphinx_timeout = 5
INVENTORIES = HERE / "_build" / "inventories"
intersphinx_mapping = {
    "python": (
        "https://docs.python.org/3/",
        ("https://docs.python.org/3/objects.inv", str(INVENTORIES / "python.inv")),
    ),
    "django": (
        "https://docs.djangoproject.com/en/stable/",
        (
            "https://docs.djangoproject.com/en/stable/_objects/",
            str(INVENTORIES / "django.inv"),
        ),
    ),
}
if os.environ.get("DOCS_OFFLINE"):  # skip the doomed network round trips
    intersphinx_mapping = {
        name: (url, str(INVENTORIES / f"{name}.inv"))
        for name, (url, _) in intersphinx_mapping.items()
    }


def write_offline_inventories() -> None:
    from offline_inventories import INVENTORIES as ENTRIES  # noqa: PLC0415

    INVENTORIES.mkdir(parents=True, exist_ok=True)
    for name, (project_name, project_version, entries) in ENTRIES.items():
        header = (
            "# Sphinx inventory version 2\n"
            f"# Project: {project_name}\n# Version: {project_version}\n"
            "# The remainder of this file is compressed using zlib.\n"
        )
        body = "".join(f"{line}\n" for line in entries)
        (INVENTORIES / f"{name}.inv").write_bytes(header.encode() + zlib.compress(body.encode()))


write_offline_inventories()


def setup(app: Sphinx) -> None:
    # Django's docs define :setting: for settings; declare it so that
    # {setting}`CONN_MAX_AGE` links to Django's settings reference.
    app.add_crossref_type("setting", "setting", indextemplate="pair: %s; setting")
