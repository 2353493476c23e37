"""The command line: `python -m mpdemo check` (and mpdemo.check()) and `python -m mpdemo bench`."""

import os
import subprocess
import sys

from mpdemo import context


def run(args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_check_passes_here(capsys):
    assert context.check() is True
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.strip().splitlines()[-1].startswith("mpdemo check: all")
    assert "spawn pool: a spawn worker ran mpdemo.workloads.cpu_bound" in out


def test_check_reports_a_failing_pool(monkeypatch, capsys):
    def broken(method):
        raise RuntimeError("no processes today")

    monkeypatch.delenv("MPDEMO_START_METHOD", raising=False)  # check only the spawn pool
    monkeypatch.setattr(context, "_check_pool", broken)
    assert context.check() is False
    out = capsys.readouterr().out
    assert "FAIL  spawn pool: RuntimeError: no processes today" in out
    assert out.strip().splitlines()[-1] == "mpdemo check: FAILED (spawn pool); see the FAIL lines above"


def test_cli_exits_0_when_all_checks_pass():
    result = run(["-m", "mpdemo", "check"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mpdemo check: all" in result.stdout


def test_cli_exits_1_on_an_unknown_start_method():
    env = {**os.environ, "MPDEMO_START_METHOD": "bogus"}
    result = run(["-m", "mpdemo", "check"], env=env)
    assert result.returncode == 1
    assert "FAIL  start method: ValueError: MPDEMO_START_METHOD='bogus' is not one of" in result.stdout


def test_a_spawn_pool_cannot_start_from_a_script_on_stdin():
    """A real failure: spawn workers try to re-run '<stdin>' as a file, and the pool breaks."""
    script = "import sys, mpdemo\nsys.exit(0 if mpdemo.check() else 1)\n"
    result = run(["-"], input=script)
    assert result.returncode == 1
    assert "FAIL  spawn pool: BrokenProcessPool" in result.stdout
    assert "hint: spawn workers cannot re-run a script read from stdin" in result.stdout


def test_bench_runs_every_figure_and_checks_results():
    """A smoke run: the quick sizes are too small for the targets, so only the report is checked."""
    result = run(["-m", "mpdemo", "bench", "--quick"])
    assert result.returncode == 0, result.stderr
    summaries = result.stdout.split("figure  ", 1)[-1]  # every script's summary, the first one on
    for figure in ("1  processes vs serial", "1b processes vs serial, cold", "2  threads vs serial",
                   "3  chunksize=1 time / auto time", "4  auto", "4b suggest_chunksize",
                   "5  chunked_map time / fastest other",
                   "1  caller's peak memory", "1b largest worker's peak memory", "2  CPU-heavy rows, 2 workers",
                   '3  light rows, feed="rows" time / feed="ranges" time'):
        assert figure in summaries
    assert "results equal serial: False" not in result.stdout
    assert "results equal serial: True" in result.stdout and "FAIL" not in summaries


def test_bench_passes_unknown_options_to_the_scripts_only():
    result = run(["-m", "mpdemo", "bench", "--no-such-option"])
    assert result.returncode == 1
    assert "unrecognized arguments: --no-such-option" in result.stderr
    assert "failed: bench_chunking.py" in result.stderr
    assert run(["-m", "mpdemo", "check", "--quick"]).returncode == 2
