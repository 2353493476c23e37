"""Print pip requirements that pin every dependency of mpdemo to the lowest version it allows.

Each ``name>=X`` in pyproject.toml is a promise: mpdemo works with version X. ``make
test-minimum`` installs exactly those versions and runs the tests, so the promise is checked
rather than assumed. The pins are printed, never stored: raise a bound in pyproject.toml and
the next run follows it.

    python tools/lowest_versions.py > lowest.txt && pip install -r lowest.txt

Only mpdemo's own requirements are pinned. What they need in turn still comes at the newest
version pip finds compatible, as it would for a learner who already has the old version of
one package; :data:`CAPS` holds the few such packages whose newest release breaks an old
version we promise, each with the reason. Needs ``packaging`` (and ``tomli`` on Python 3.10).
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

#: Upper bounds for packages that mpdemo does not ask for itself, but that one of its
#: dependencies, at its lowest version, fails with in their newest release: requirement -> why.
CAPS: dict[str, str] = {
    "pyparsing<3.3": "pyparsing 3.3 deprecates parseString, which matplotlib 3.7 calls: "
                     "a DeprecationWarning on import, an error in our tests",
}


def requirements(project: dict) -> list[Requirement]:
    """The core dependencies and those of every extra, except an extra's reference to another
    of mpdemo's own extras (``mpdemo[notebooks]`` in ``test``): its packages are listed already."""
    lines = project["dependencies"] + [line for extra in project["optional-dependencies"].values()
                                       for line in extra]
    found = [Requirement(line) for line in lines]
    return [r for r in found if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def lower_bound(requirement: Requirement) -> str:
    """The version of the requirement's ``>=`` clause: ``numpy>=1.24`` -> ``1.24``."""
    bounds = [clause.version for clause in requirement.specifier if clause.operator == ">="]
    if len(bounds) != 1:
        raise ValueError(f"{requirement} needs exactly one '>=' lower bound to be pinned")
    return bounds[0]


def pin(requirement: Requirement) -> str:
    """``dask[distributed]>=2023.9`` -> ``dask[distributed]==2023.9``.

    The extras stay, so pip installs what they add (here ``distributed``) at the version
    that this old dask asks for, and so does a marker (``; python_version < "3.11"``).
    """
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{requirement.name}{extras}=={lower_bound(requirement)}{marker}"


def lowest_versions(pyproject: Path = PYPROJECT) -> list[str]:
    """The lines of a pip requirements file: every pin, then every cap with its reason."""
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = [pin(requirement) for requirement in requirements(project)]
    caps = [f"{cap}  # {why}" for cap, why in CAPS.items()]
    return pins + caps


if __name__ == "__main__":
    sys.stdout.write("".join(line + "\n" for line in lowest_versions()))
