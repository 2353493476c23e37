"""Small reproductions of the mistakes the course warns about, each run inside a time limit.

Some of these mistakes hang forever, so they never run in the notebook's own process: they run
as a separate Python process that is killed, with all its children, when its time is up.
:func:`run_python` does that and reports what happened, so a learner sees the failure and the
kernel stays alive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdemo import workloads
from mpdemo.context import get_context

#: A function typed into a notebook lives in ``__main__``; spawn workers cannot import it.
#: Fill in ``{method}`` (a start method) and ``{pool_code}`` (:data:`WITH_POOL` or
#: :data:`WITH_EXECUTOR`) with ``str.format``.
NOTEBOOK_FUNCTION = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

def square(x):                      # defined in __main__, like a function in a notebook cell
    return x * x

ctx = multiprocessing.get_context("{method}")
{pool_code}
'''

WITH_POOL = '''\
with ctx.Pool(2) as pool:
    print(pool.map(square, range(8)))   # a worker dies unpickling `square`; Pool waits forever
'''

WITH_EXECUTOR = '''\
with ProcessPoolExecutor(2, mp_context=ctx) as pool:
    print(list(pool.map(square, range(8))))   # the executor notices the dead worker
'''

#: A script that starts workers at import time, with no ``if __name__ == "__main__":`` guard.
#: Each spawn worker imports the script again, and so tries to start workers of its own.
UNGUARDED_SCRIPT = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from mpdemo.workloads import cpu_bound

ctx = multiprocessing.get_context("spawn")
with ProcessPoolExecutor(2, mp_context=ctx) as pool:
    print(list(pool.map(cpu_bound, range(4))))
'''

#: The same script with the guard: workers import it without running the pool code.
GUARDED_SCRIPT = '''\
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from mpdemo.workloads import cpu_bound

def main():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        print(list(pool.map(cpu_bound, range(4))))

if __name__ == "__main__":
    main()
'''


@dataclass(frozen=True)
class Outcome:
    """How a child Python process ended."""

    pid: int  # also its process group on POSIX: its workers belong to it
    returncode: int | None  # None when it was killed at the time limit
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    def __str__(self) -> str:
        if self.timed_out:
            head = f"no answer after {self.seconds:.1f} s: killed it (it would have waited forever)"
        else:
            head = f"exited with code {self.returncode} after {self.seconds:.1f} s"
        lines = [head]
        if self.stdout.strip():
            lines.append("printed: " + self.stdout.strip().splitlines()[-1])
        lines += [f"error: {error}" for error in self.errors()]
        return "\n".join(lines)

    def errors(self) -> list[str]:
        """The distinct ``SomeError: message`` lines of stderr, with a message that starts on the
        next lines (as RuntimeError's does) joined up to its full stop."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        found = []
        for i, line in enumerate(lines):
            if re.match(r"^[\w.]+(Error|Exception|Pool)\b", line):
                message = [line]
                for follow in lines[i + 1:i + 4] if line.endswith(":") else []:
                    message.append(follow)
                    if follow.endswith("."):
                        break
                found.append(" ".join(message))
        return list(dict.fromkeys(found))


def run_python(args: list[str], *, timeout: float, stdin: str | None = None) -> Outcome:
    """Run ``python *args`` with a time limit; on timeout stop it and every process it started.

    The child starts a new process group, so its workers can be stopped with it. They get
    SIGTERM, which multiprocessing's resource tracker ignores: it outlives them, notices they
    are gone and removes their semaphores from /dev/shm. (SIGKILL to the whole group would kill
    the tracker too and leave them behind.)
    """
    start = time.perf_counter()
    plain = {**os.environ, "PYTHON_COLORS": "0"}  # Jupyter asks for coloured tracebacks; we read them
    child = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=plain, start_new_session=os.name == "posix")
    try:
        out, err = child.communicate(stdin, timeout=timeout)
        return Outcome(child.pid, child.returncode, out, err, time.perf_counter() - start, False)
    except subprocess.TimeoutExpired:
        stop_process_group(child)
        out, err = child.communicate()
        return Outcome(child.pid, None, out, err, timeout, True)


def stop_process_group(child: subprocess.Popen, grace: float = 10) -> None:
    """Stop a child and its process group: SIGTERM, then SIGKILL whatever is left after ``grace`` s."""
    if os.name != "posix":
        child.kill()
        return
    os.killpg(child.pid, signal.SIGTERM)
    child.wait()  # reap it: a dead child that nobody waited for still counts as in the group
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, 0)  # signal 0: is anyone in the group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)


def run_code(code: str, *, timeout: float = 10) -> Outcome:
    """Run ``code`` with ``python -c``: its functions live in ``__main__``, as in a notebook."""
    return run_python(["-c", code], timeout=timeout)


def run_script(source: str, *, timeout: float = 10) -> Outcome:
    """Save ``source`` as a script file and run it with ``python script.py``."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "script.py"
        script.write_text(source)
        return run_python([str(script)], timeout=timeout)


def one_row_per_task(array: np.ndarray, processes: int, *, timeout: float = 120) -> list[float]:
    """Anti-pattern 1: a pool task for every row of an array, each doing a few microseconds of work.

    Every row is pickled, sent, unpickled, computed, and its result sent back on its own, so the
    overhead is paid once per row. (``map_async(...).get(timeout)``: a Pool call that cannot hang.)
    """
    with get_context().Pool(processes) as pool:
        return pool.map_async(workloads.sum_of_squares, array, chunksize=1).get(timeout)
