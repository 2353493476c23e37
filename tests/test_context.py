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
