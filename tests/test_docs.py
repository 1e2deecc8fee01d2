"""The documentation site: `mkdocs build --strict` (what a reader gets from `mkdocs.yml` and
`docs/`) into a temporary folder, once per session; the API reference pages it must hold; and
every public module and name of the package in that reference, by the id mkdocstrings gives
its heading (`id="mfzoo.models.mf.MF"`)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mfzoo

if importlib.util.find_spec("mkdocs") is None:
    pytest.skip(
        "mkdocs is not installed: the documentation site needs the [docs] extra "
        "(pip install -e '.[docs]', part of [dev])",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PAGES = ("models", "losses", "solvers", "evaluation", "retrieval")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by `mkdocs build --strict`, which fails on any warning."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = (done.stdout + done.stderr).splitlines()
    problems = [line for line in log if re.search(r"WARNING|ERROR|Error|Aborted", line)]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        problems or log[-40:]
    )
    return out


@pytest.fixture(scope="module")
def reference_html(site) -> str:
    """The HTML of every API reference page, concatenated."""
    pages = sorted((site / "reference").rglob("*.html"))
    assert pages, "the site has no reference/ pages"
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def _modules() -> list[str]:
    """Every module of the package, without private ones (a name part starting with `_`,
    `__main__` included)."""
    names = [mfzoo.__name__]
    for info in pkgutil.walk_packages(mfzoo.__path__, prefix=f"{mfzoo.__name__}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_names(module) -> list[str]:
    """`__all__` where the module defines it, else its public classes and functions defined
    in it (not imported)."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return list(exported)
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    )


_griffe_package = None


def _ids(module, name: str) -> list[str]:
    """The reference ids that document `module.name`: `module.name` itself, or, for a name the
    module imports from elsewhere (a package's re-export), the id where it is defined, which
    the reference documents once and the package page links to."""
    ids = [f"{module.__name__}.{name}"]
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        ids.append(f"{obj.__module__}.{obj.__qualname__}")
    else:  # a constant or type alias: where its assignment is, as mkdocstrings sees it
        global _griffe_package
        if _griffe_package is None:
            import griffe

            _griffe_package = griffe.load(mfzoo.__name__, search_paths=[str(ROOT)])
        owner = _griffe_package
        for part in module.__name__.split(".")[1:]:
            owner = owner.members[part]
        target = owner.members[name]
        ids.append(target.final_target.path if target.is_alias else target.path)
    return ids


def test_the_site_builds_with_the_reference_pages(site):
    assert (site / "index.html").is_file()
    for page in REFERENCE_PAGES:
        assert (site / "reference" / page / "index.html").is_file(), f"reference/{page}.md"


def test_the_experiments_are_pages_of_the_site(site):
    """The experiments' own write-ups, included (docs/hooks.py), with their detail tables."""
    for readme in sorted((ROOT / "experiments").glob("*/README.md")):
        page = site / "experiments" / readme.parent.name / "index.html"
        assert page.is_file(), f"{readme.relative_to(ROOT)} is not a page of the site"
    assert (site / "experiments" / "nested_cv" / "comparison" / "index.html").is_file()


def test_every_module_is_in_the_reference(reference_html):
    missing = [name for name in _modules() if f'id="{name}"' not in reference_html]
    assert not missing, f"modules without an entry in docs/reference/*.md: {missing}"


def test_every_public_name_is_in_the_reference(reference_html):
    ids = set(re.findall(r'id="(mfzoo[\w.]*)"', reference_html))
    missing = []
    for module_name in _modules():
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            if not any(i in ids for i in _ids(module, name)):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"
