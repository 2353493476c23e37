"""pyproject.toml and environment.yml must ask for the same packages at the same minimum versions."""

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[a-z,]+\])?\s*>=\s*([0-9.]+)$")
#: conda-forge names that differ from PyPI's.
PYPI_NAME = {"playwright-python": "playwright"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(requirement: str) -> dict[str, str]:
    """'dask[distributed]>=2023.9' -> {'dask': '2023.9', 'distributed': '2023.9'}."""
    match = REQUIREMENT.match(requirement.strip())
    assert match, f"not a 'name>=version' minimum: {requirement!r}"
    name, extras, version = match.groups()
    names = [name] + (extras.strip("[]").split(",") if extras else [])
    return {PYPI_NAME.get(normalise(n), normalise(n)): version for n in names}


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        found.update(parse(requirement))
    return found


def conda_requirements() -> dict[str, str]:
    """The conda packages of environment.yml: '  - name>=version' lines outside the pip section."""
    found = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = re.match(r"^  - ([^\s:]+)(\s+#.*)?$", line)
        if item and item.group(1) not in ("pip", "conda-forge") and not item.group(1).startswith("python"):
            found.update(parse(item.group(1)))
    return found


def test_environment_yml_matches_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_every_requirement_is_a_minimum_not_a_pin():
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "environment.yml").read_text()
    assert "==" not in text


def test_parse_reads_extras_and_normalises_names():
    assert parse("dask[distributed]>=2023.9") == {"dask": "2023.9", "distributed": "2023.9"}
    assert parse("line_profiler>=4.1") == {"line-profiler": "4.1"}
    assert parse("playwright-python>=1.44") == {"playwright": "1.44"}
