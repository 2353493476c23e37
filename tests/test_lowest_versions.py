"""tools/lowest_versions.py pins every requirement to its lower bound (``make test-minimum``)."""

import importlib.util
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lowest_versions", ROOT / "tools" / "lowest_versions.py")
lowest_versions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lowest_versions)


def test_pin_keeps_extras_and_markers():
    assert lowest_versions.pin(Requirement("dask[distributed,dataframe]>=2023.9")) == \
        "dask[dataframe,distributed]==2023.9"
    assert lowest_versions.pin(Requirement('tomli>=2.0; python_version < "3.11"')) == \
        'tomli==2.0; python_version < "3.11"'


def test_pin_needs_one_lower_bound():
    for requirement in ("numpy", "numpy<3", "numpy>=1.24,>=1.26"):
        with pytest.raises(ValueError, match="exactly one '>=' lower bound"):
            lowest_versions.pin(Requirement(requirement))


def test_every_dependency_is_pinned_once_and_mpdemo_itself_not():
    pins = [line for line in lowest_versions.lowest_versions() if "==" in line]
    names = [Requirement(line).name for line in pins]
    assert "numpy" in names and "pytest" in names and "pandas" in names
    assert "mpdemo" not in names
    assert len(names) == len(set(names))
