"""The course in a container: the notebooks pass with a 64 MB /dev/shm, one or two CPUs and 2 GB.

Docker, a JupyterHub on Kubernetes and Binder give a container a 64 MB ``/dev/shm`` by default,
a CPU quota smaller than the host's cores and a memory limit (Binder: about 2 GB). This test
makes such a place on this machine and runs the notebooks there under nbval, in a separate
pytest (so that this suite's own checks are untouched):

* ``/dev/shm``: a private mount namespace (``unshare -m``) with a 64 MB tmpfs mounted on it;
* CPUs and memory: a cgroup of our own with a CPU quota (``cpu.max`` or ``cpu.cfs_quota_us``)
  and a memory limit, which ``mpdemo.cpu_count()`` and ``mpdemo.machine`` read as a container
  would give them; the CPUs are also pinned with ``taskset`` where the quota is one CPU.

It needs root (as in this project's CI). Where it cannot make the place it is skipped, saying
why; with ``MPDEMO_REQUIRE_CONTAINER_TEST=1`` (set by ``.ci/run``) it fails instead, so that CI
never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHARED_MEMORY = ("03_", "04_", "05_", "08_")  # the lessons that use shared memory or memory maps


def cannot(reason: str) -> None:
    if os.environ.get("MPDEMO_REQUIRE_CONTAINER_TEST") == "1":
        pytest.fail(f"MPDEMO_REQUIRE_CONTAINER_TEST=1, but {reason}")
    pytest.skip(reason)


def make_cgroup(cpus: float, memory: int) -> Path | None:
    """A cgroup with a CPU quota of ``cpus`` and a memory limit of ``memory`` bytes (None if impossible)."""
    v1_cpu, v1_memory, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    name = f"mpdemo-container-{os.getpid()}"
    try:
        if (v1_cpu / "cpu.cfs_quota_us").exists() and (v1_memory / "memory.limit_in_bytes").exists():
            for folder in (v1_cpu / name, v1_memory / name):
                folder.mkdir()
            (v1_cpu / name / "cpu.cfs_period_us").write_text("100000")
            (v1_cpu / name / "cpu.cfs_quota_us").write_text(str(int(cpus * 100_000)))
            (v1_memory / name / "memory.limit_in_bytes").write_text(str(memory))
            return v1_cpu / name
        if "cpu" in (v2 / "cgroup.controllers").read_text():
            (v2 / name).mkdir()
            (v2 / name / "cpu.max").write_text(f"{int(cpus * 100_000)} 100000")
            (v2 / name / "memory.max").write_text(str(memory))
            return v2 / name
    except OSError:
        return None
    return None


def remove_cgroup(folder: Path) -> None:
    for path in (folder, Path("/sys/fs/cgroup/memory") / folder.name):
        if path.is_dir():
            path.rmdir()


def in_cgroup_command(folder: Path) -> str:
    """Shell words that move the shell into the cgroup (both v1 hierarchies where there are two)."""
    targets = [folder / "cgroup.procs"]
    if (Path("/sys/fs/cgroup/memory") / folder.name).is_dir():
        targets.append(Path("/sys/fs/cgroup/memory") / folder.name / "cgroup.procs")
    return " && ".join(f"echo $$ > {target}" for target in targets)


@pytest.mark.container
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("cpus", [1, 2], ids=["one CPU", "two CPUs"])
def test_the_notebooks_pass_in_a_container_like_place(cpus, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        cannot("making a private /dev/shm needs root and unshare")
    notebooks = NOTEBOOKS if cpus == 1 else [p for p in NOTEBOOKS if p.name.startswith(SHARED_MEMORY)]
    group = make_cgroup(cpus, 2 * 2**30)
    if group is None:
        cannot("no cgroup with a CPU and a memory controller can be made here")
    pin = "taskset -c 0 " if cpus == 1 and shutil.which("taskset") else ""
    pytest_command = (f"{pin}{sys.executable} -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=120 "
                      f"-p no:cacheprovider -q {' '.join(str(p) for p in notebooks)}")
    inner = f"mount -t tmpfs -o size=64m tmpfs /dev/shm && {pytest_command}"
    script = f"{in_cgroup_command(group)} && exec unshare -m sh -c '{inner}'"
    env = {**os.environ, "MPDEMO_SIZE": "small", "PYTHON_COLORS": "0"}
    try:
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=1700, cwd=ROOT, env=env)
    finally:
        remove_cgroup(group)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "passed" in summary and "failed" not in summary, summary
