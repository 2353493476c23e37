"""pyproject.toml and environment.yml must ask for the same packages at the same minimum versions.

environment.yml is for learners (conda, Binder): it holds mpdemo's own dependencies and its
`notebooks` extra, and nothing that only the tests need.
"""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: conda-forge names that differ from PyPI's.
PYPI_NAME = {"python-duckdb": "duckdb"}
#: The conda-forge packages that stand for a pip extra: dask[distributed] is the package
#: distributed there, while conda-forge's dask already brings what dask[dataframe] adds.
CONDA_EXTRAS = {"dask[distributed]": ["distributed"], "dask[dataframe]": []}


def parse(requirement: str) -> dict[str, str]:
    """A 'name>=version' minimum as {PyPI name: version}, one entry per conda-forge package:
    'dask[dataframe,distributed]>=2023.9' -> {'dask': '2023.9', 'distributed': '2023.9'}."""
    parsed = Requirement(requirement)
    clauses = list(parsed.specifier)
    assert len(clauses) == 1 and clauses[0].operator == ">=", f"not a 'name>=version' minimum: {requirement!r}"
    names = [parsed.name] + [package for extra in sorted(parsed.extras)
                             for package in CONDA_EXTRAS[f"{parsed.name}[{extra}]"]]
    return {PYPI_NAME.get(canonicalize_name(n), canonicalize_name(n)): clauses[0].version for n in names}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pyproject_requirements() -> dict[str, str]:
    """mpdemo's dependencies and its `notebooks` extra: what a learner installs."""
    project = pyproject()
    found = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["notebooks"]:
        found.update(parse(requirement))
    return found


def conda_requirements() -> dict[str, str]:
    """The conda packages of environment.yml: '  - name>=version' lines outside the pip section."""
    found = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = re.match(r"^  - ([^\s:]+)(\s+#.*)?$", line)
        if item and item.group(1) not in ("pip", "conda-forge") and not item.group(1).startswith("python>"):
            found.update(parse(item.group(1)))
    return found


def test_environment_yml_matches_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_test_extra_includes_the_notebooks_extra():
    assert "mpdemo[notebooks]" in pyproject()["optional-dependencies"]["test"]


def test_every_requirement_is_a_minimum_not_a_pin():
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "environment.yml").read_text()
    assert "==" not in text


def test_parse_reads_extras_and_normalises_names():
    assert parse("dask[dataframe,distributed]>=2023.9") == {"dask": "2023.9", "distributed": "2023.9"}
    assert parse("line_profiler>=4.1") == {"line-profiler": "4.1"}
    assert parse("python-duckdb>=1.0") == {"duckdb": "1.0"}


def test_parse_rejects_anything_but_a_minimum():
    for requirement in ("numpy==1.24", "numpy", "numpy>=1.24,<3"):
        with pytest.raises(AssertionError, match="not a 'name>=version' minimum"):
            parse(requirement)
