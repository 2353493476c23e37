"""The command line: `python -m mpdemo check` (and mpdemo.check()) and `python -m mpdemo bench`."""

import os
import re
import subprocess
import sys

import pytest

from mpdemo import __main__ as cli
from mpdemo import checks, strategies


def run(args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def test_check_passes_here(capsys):
    assert checks.check() is True
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.strip().splitlines()[-1].startswith("mpdemo check: all")
    assert "spawn pool: a spawn worker ran mpdemo.workloads.cpu_bound" in out


def test_check_reports_a_failing_pool(monkeypatch, capsys):
    def broken(method):
        raise RuntimeError("no processes today")

    monkeypatch.delenv("MPDEMO_START_METHOD", raising=False)  # check only the spawn pool
    monkeypatch.setattr(checks, "_check_pool", broken)
    assert checks.check() is False
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
    assert "FAIL  spawn pool: WorkerDied: " in result.stdout and "before it finished its first task" in result.stdout
    assert "hint: spawn workers cannot re-run a script read from stdin" in result.stdout


@pytest.mark.timeout(900)
def test_bench_compares_every_contender_then_runs_every_figure(tmp_path):
    """A smoke run: the quick sizes are too small for the targets, so only the report is checked."""
    png = tmp_path / "comparison.png"
    result = run(["-m", "mpdemo", "bench", "--quick", "--png", str(png)], timeout=800)
    assert result.returncode == 0, result.stderr
    comparison, scripts = result.stdout.split("== bench_chunking.py --quick")
    lines = comparison.split("contender ")[1].split("\n\n")[0].splitlines()[1:]
    table = [line for line in lines if not line.startswith("* ")]  # below it: one note per marked speedup
    notes = [line for line in lines if line.startswith("* ")]
    assert [line.split("  ")[0].strip() for line in table] == list(strategies.CONTENDERS)
    marked = [line.split("  ")[0].strip() for line in table if re.search(r"×\s\*\s", line)]
    assert [note[2:].split(":")[0] for note in notes] == marked
    assert all("cores can give, so not the pool's doing" in note for note in notes)
    for line in table:  # a time, a speedup, and results equal to the serial loop's
        assert re.search(r"\s\d+\.\d{3}\s+\d+\.\d\d×\s.*\s(ref\.|equal)\s", line), line
    assert "DIFFER" not in comparison
    for step in ("1. Vectorise first.", "2. Then chunk.", "3. Chunked,", "4. Move less data.", "5. Scale out last."):
        assert step in comparison
    assert "C1 chunked_map time / fastest other pool" in comparison and "FAIL" not in comparison
    assert png.read_bytes().startswith(b"\x89PNG")

    summary = scripts.split("figure  ", 1)[-1]  # every script's summary, the first one on
    for figure in ("1  processes vs serial", "1b processes vs serial, cold", "2  threads vs serial",
                   "3  chunksize=1 time / auto time", "4  auto", "4b suggest_chunksize",
                   "5  chunked_map time / fastest other",
                   "1  caller's peak memory", "1b largest worker's peak memory", "2  CPU-heavy rows, 2 workers",
                   '3  light rows, feed="ranges" speedup / 2 workers', '3b light rows, feed="rows" time / feed="ranges" time',
                   "3c the serial loop in 2 workers at once",
                   "1  tuples of 11 strings: chunked_map time / Pool.map time", "2  one empty task: chunked_map time",
                   "3  kept pool, a later call vs serial", "3b cold call, start-up included",
                   "1  hand-off alone (len), pickled time / shared time", "2  peak memory with shared memory",
                   "3  score_rows (Python, per row), parallel_apply",
                   "1  CPU-heavy rows, frame_apply on 2 workers", "2  process_parquet peak memory (caller + workers)"):
        assert figure in summary
    assert "mpire: results equal serial: True" in scripts
    assert "results equal serial: False" not in scripts
    assert "results equal serial: True" in scripts and "FAIL" not in summary


@pytest.fixture
def one_fake_benchmark(tmp_path, monkeypatch):
    """``python -m mpdemo bench`` with the comparison stubbed out and one script that prints its arguments."""
    (tmp_path / "bench_fake.py").write_text("import sys\nprint('fake got', sys.argv[1:])\n"
                                            "sys.exit(2 if '--no-such-option' in sys.argv else 0)\n")
    monkeypatch.setattr(cli, "BENCHMARKS", tmp_path)
    monkeypatch.setattr(strategies, "report", lambda args: print("compared") or 0)
    return tmp_path


def test_bench_passes_its_options_and_unknown_ones_to_the_scripts(one_fake_benchmark, capsys):
    assert cli.main(["bench", "--quick", "--strict"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["compared", "== bench_fake.py --quick --strict",
                                                         "fake got ['--quick', '--strict']"]
    assert cli.main(["bench", "--png", "x.png", "--no-such-option"]) == 1
    out, err = capsys.readouterr()
    assert "fake got ['--no-such-option']" in out and "failed: bench_fake.py" in err


def test_bench_refuses_unknown_options_without_scripts(one_fake_benchmark, capsys):
    (one_fake_benchmark / "bench_fake.py").unlink()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--no-such-option"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert cli.main(["bench", "--quick"]) == 0  # the comparison alone, as from an installed package
    assert "the other benchmarks are in benchmarks/ of a clone" in capsys.readouterr().out


def test_bench_says_which_library_is_missing(monkeypatch, capsys):
    monkeypatch.delattr("mpdemo.strategies")  # as if mpire, joblib or dask were missing: it cannot be imported
    monkeypatch.setitem(sys.modules, "mpdemo.strategies", None)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--quick"])
    assert exit_.value.code == 2
    assert "bench compares joblib, mpire and dask too, and mpdemo.strategies is not installed" in \
        capsys.readouterr().err


def test_other_commands_refuse_unknown_options():
    assert run(["-m", "mpdemo", "check", "--quick"]).returncode == 2


def test_the_check_knows_what_every_notebook_needs():
    from pathlib import Path

    notebooks = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    for size in ("small", "full"):
        assert sorted(checks.verdicts(size)) == notebooks, size
