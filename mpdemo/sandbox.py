"""Running a program in a separate Python process, with a time limit, and reporting how it ended.

Some of the mistakes the course shows hang forever, crash with a segmentation fault or leave
worker processes behind. None of them may run in the notebook's own kernel, so each runs as a
child Python process (``python -c code`` or ``python script.py``)::

      notebook kernel                           child process group (start_new_session)
      ───────────────                           ────────────────────────────────────────
      run_python(args, timeout) ── starts ──►   python …  ──► its workers, its resource tracker
        waits at most `timeout` s
        on time: the exit code, what it printed
        too late: SIGTERM to the whole group ──►  all of them end; the tracker, which ignores
                  (SIGKILL after a grace)          SIGTERM, outlives them and cleans up
      Outcome: how it ended, in words, and the errors it printed

The child starts a session of its own, so it and every process it started form one process
group that can be stopped together. It gets ``PYTHON_COLORS=0``: Jupyter asks Python for
coloured tracebacks, and :meth:`Outcome.errors` reads them as text.
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

from mpdemo.context import signal_name


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
        elif self.returncode is not None and self.returncode < 0:
            head = f"was killed by {signal_name(-self.returncode)} after {self.seconds:.1f} s"
            if -self.returncode == getattr(signal, "SIGSEGV", None):
                head += (" (a segmentation fault: it touched memory that was not there any more; a shell "
                         f"reports exit status {128 - self.returncode})")
        else:
            head = f"exited with code {self.returncode} after {self.seconds:.1f} s"
        lines = [head]
        lines += [f"printed: {line}" for line in self.stdout.strip().splitlines()]
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

    def warnings(self) -> list[str]:
        """The distinct ``SomeWarning: message`` parts of stderr (the file and line before them left out)."""
        found = [match.group(0) for match in re.finditer(r"\b\w+Warning: .*", self.stderr)]
        return list(dict.fromkeys(found))


def run_python(args: list[str], *, timeout: float, stdin: str | None = None, env: dict[str, str] | None = None
               ) -> Outcome:
    """Run ``python *args`` with a time limit; on timeout stop it and every process it started.

    The child starts a new process group, so its workers can be stopped with it. They get
    SIGTERM, which multiprocessing's resource tracker ignores: it outlives them, notices they
    are gone and removes their semaphores from /dev/shm. (SIGKILL to the whole group would kill
    the tracker too and leave them behind.)
    """
    start = time.perf_counter()
    plain = {**os.environ, **(env or {}), "PYTHON_COLORS": "0"}  # Jupyter asks for coloured tracebacks
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


def run_script(source: str, *args: str, timeout: float = 10) -> Outcome:
    """Save ``source`` as a script file and run it with ``python script.py *args``."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "script.py"
        script.write_text(source)
        return run_python([str(script), *args], timeout=timeout)
