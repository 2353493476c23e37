"""mpdemo.context: the start method and size switches, cores, pool start-up."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import psutil
import pytest

from mpdemo import context


def test_start_method_defaults_to_spawn(monkeypatch):
    monkeypatch.delenv("MPDEMO_START_METHOD", raising=False)
    assert context.start_method() == "spawn"
    assert context.get_context().get_start_method() == "spawn"


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_start_method_follows_the_environment(monkeypatch, method):
    monkeypatch.setenv("MPDEMO_START_METHOD", method.upper())
    assert context.start_method() == method
    assert context.get_context().get_start_method() == method


@pytest.mark.parametrize("name, call", [("MPDEMO_START_METHOD", context.start_method),
                                        ("MPDEMO_SIZE", context.size)])
def test_unknown_setting_names_the_allowed_values(monkeypatch, name, call):
    monkeypatch.setenv(name, "turbo")
    with pytest.raises(ValueError, match=rf"{name}='turbo' is not one of \w+, \w+"):
        call()


def test_size_defaults_to_full(monkeypatch):
    monkeypatch.delenv("MPDEMO_SIZE", raising=False)
    assert context.size() == "full"
    monkeypatch.setenv("MPDEMO_SIZE", "small")
    assert context.size() == "small"


def test_cpu_count_counts_the_cores_we_may_use():
    assert 1 <= context.cpu_count() <= os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert context.cpu_count() == len(os.sched_getaffinity(0))


def test_start_workers_starts_every_worker():
    with ProcessPoolExecutor(max_workers=2, mp_context=context.get_context()) as pool:
        context.start_workers(pool, 2)
        workers = [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())
                   and "forkserver" not in " ".join(p.cmdline())]
        assert len(workers) == 2


def test_start_pool_starts_and_stops_every_worker():
    context.start_pool(context.start_method(), 2)  # the leftover check proves they stopped


# ── CPU quotas (a container's --cpus), from a cgroup tree of our own ─────────────────────────


def fake_cgroups(tmp_path, monkeypatch, files: dict[str, str], version: int = 2) -> None:
    """Point mpdemo.machine at a made-up /proc/self/cgroup, mountinfo and cgroup folder."""
    from mpdemo import machine

    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if version == 2:
        membership, mount = "0::/kubepods/pod1\n", f"30 23 0:26 / {root} rw - cgroup2 cgroup2 rw\n"
    else:
        membership = "4:memory:/kubepods/pod1\n3:cpu,cpuacct:/kubepods/pod1\n"
        mount = (f"31 23 0:27 / {root} rw - cgroup cgroup rw,cpu,cpuacct\n"
                 f"32 23 0:28 / {root} rw - cgroup cgroup rw,memory\n")
    (tmp_path / "cgroup.txt").write_text(membership)
    (tmp_path / "mountinfo.txt").write_text(mount)
    monkeypatch.setattr(machine, "PROC_CGROUP", tmp_path / "cgroup.txt")
    monkeypatch.setattr(machine, "PROC_MOUNTINFO", tmp_path / "mountinfo.txt")


@pytest.mark.parametrize("version, files, quota", [
    (2, {"kubepods/pod1/cpu.max": "150000 100000", "kubepods/cpu.max": "max 100000"}, 1.5),
    (2, {"kubepods/pod1/cpu.max": "max 100000", "cpu.max": "50000 100000"}, 0.5),
    (2, {"kubepods/pod1/cpu.max": "max 100000"}, None),
    (1, {"kubepods/pod1/cpu.cfs_quota_us": "100000", "kubepods/pod1/cpu.cfs_period_us": "100000"}, 1.0),
    (1, {"kubepods/pod1/cpu.cfs_quota_us": "-1", "kubepods/pod1/cpu.cfs_period_us": "100000"}, None),
], ids=["v2 pod", "v2 parent is lower", "v2 none", "v1 one cpu", "v1 none"])
def test_cpu_count_honours_a_cgroup_quota(tmp_path, monkeypatch, version, files, quota):
    from mpdemo import machine

    fake_cgroups(tmp_path, monkeypatch, files, version)
    assert machine.cpu_quota() == quota
    limits = machine.cpu_limits()
    expected = limits.affinity if quota is None else max(1, min(limits.affinity, -(-quota // 1)))
    assert context.cpu_count() == limits.usable == expected
    if quota is not None:
        assert f"a CPU quota allows {quota:g}" in limits.explain()


def test_memory_limit_from_cgroups(tmp_path, monkeypatch):
    from mpdemo import machine

    fake_cgroups(tmp_path, monkeypatch, {"kubepods/pod1/memory.max": str(2 * 2**30), "memory.max": "max"})
    assert machine.memory_limit() == 2 * 2**30
    (tmp_path / "v1").mkdir()
    fake_cgroups(tmp_path / "v1", monkeypatch, {"kubepods/pod1/memory.limit_in_bytes": "9223372036854771712"},
                 version=1)
    assert machine.memory_limit() is None


def test_a_real_quota_is_honoured_where_we_may_make_a_cgroup(tmp_path):
    """As root on a cgroup-v1 or v2 machine: a child in a cgroup of 0.5 CPU counts 1 core."""
    import subprocess
    import sys
    from pathlib import Path

    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / f"mpdemo-test-{os.getpid()}"
        settings = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"}
    elif (v2 / "cgroup.subtree_control").exists() and "cpu" in (v2 / "cgroup.controllers").read_text():
        group = v2 / f"mpdemo-test-{os.getpid()}"
        settings = {"cpu.max": "50000 100000"}
    else:
        pytest.skip("no cgroup cpu controller to try here")
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a cgroup here: {error}")
    try:
        for name, value in settings.items():
            (group / name).write_text(value)
        code = (f"import os; open('{group}/cgroup.procs', 'w').write(str(os.getpid()));"
                "import mpdemo.machine as m; print(m.cpu_limits().usable, m.cpu_quota())")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["1", "0.5"], out
    finally:
        group.rmdir()
