"""The GitHub Actions workflow that forks of the course run is valid: actionlint finds nothing.

GitHub reports a broken workflow only once it runs it, after a push. actionlint, a static
checker for workflow files (from the `test` extra), reads .github/workflows/ci.yml here: its
keys, the ``${{ }}`` expressions, runner labels and action inputs, and, when ShellCheck is on
PATH, the shell of each ``run:`` step. Without actionlint the test is skipped, except in CI
(``CI=true``), where it fails: CI must never skip it silently.
"""

import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT_S = 60  # it checks a file in well under a second


def actionlint_command() -> str:
    """The actionlint command installed with this Python's packages, or else one on PATH."""
    found = shutil.which("actionlint", path=sysconfig.get_path("scripts")) or shutil.which("actionlint")
    if found:
        return found
    reason = "actionlint is not installed (pip install -e '.[test]')"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint on one workflow file; exit code 1 and one line per finding if it finds any."""
    return subprocess.run([actionlint_command(), "-no-color", str(workflow)],
                          capture_output=True, text=True, timeout=ACTIONLINT_S)


def test_workflow_has_no_findings():
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_a_mistake(tmp_path: Path):
    """The check above can fail: a misspelt matrix variable is found, named by line."""
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("matrix.python }}", "matrix.pyhton }}"))
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'property "pyhton" is not defined' in result.stdout


def test_workflow_runs_pytest_with_the_makefiles_flags():
    """Windows has no make, so the workflow writes the pytest command out: with `make test`'s flags."""
    nbval = re.search(r"^NBVAL := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert f"python -m pytest {nbval} -m \"not browser and not container\" tests notebooks" in WORKFLOW.read_text()
