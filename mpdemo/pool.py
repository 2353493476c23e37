"""mpdemo's own process pool: a pipe to each worker and a pipe back, no lock, nothing left behind.

How a task travels::

      the caller (ProcessPool)                                  worker processes (serve)
      ────────────────────────                                  ────────────────────────
      send(call) ── pickle.dumps(call): once, here ──┐
                    (a failure names its item)       ▼
      worker 0: outstanding [t7, t9] ── its sender thread ──► task pipe 0 ─► recv, unpickle, run,
      worker 1: outstanding [t8]     ── its sender thread ──► task pipe 1    pickle the reply here
      backlog: [t10, t11]  (waiting for a worker with room)                 │
      receive() ◄── wait(reply pipes + sentinels) ◄──── reply pipe 0, 1 ◄───┘
                    never polls: it wakes for a reply or for a worker's end

**A pipe each.** Each worker has a task pipe and a reply pipe of its own, and takes its tasks in
the order they were sent, so its oldest outstanding task is the one it is running. A worker
holds at most ``DEPTH`` tasks (one running, one waiting in its pipe, so it never waits for
the caller between two tasks); the rest wait in the caller's backlog for the first worker
with room. Nothing is shared between workers: no lock, and so no semaphore in ``/dev/shm``
that a killed kernel would leave behind, and no worker can block the others by dying while
it holds one (the way a dead worker hangs ``multiprocessing.Pool``).

**Pickled once.** The caller pickles each task into bytes (``send``), the worker unpickles it,
runs it and pickles its reply itself (:func:`run_message`), so a result that cannot travel
fails in the worker, where its item can be named. ``multiprocessing.Queue`` would pickle in a
background thread, where a failure is only printed (CPython gh-84376).

**Never blocked on a pipe.** A pipe holds 8 to 64 KB, depending on the system. Writing a large
task into the pipe of a busy worker would wait until that worker finished its current task,
and meanwhile it might be waiting for the caller to read its reply: a deadlock. So a large task
is written by a sender thread of that worker, and the caller only ever waits in
:meth:`ProcessPool.receive`. A small task (up to ``DIRECT_BYTES``) is written at once, which is
quicker: a worker holds at most ``DEPTH`` tasks, so that many small ones always fit.

**Dead workers.** ``receive`` waits on every reply pipe and every worker's *sentinel* (ready
when the process ends) with ``multiprocessing.connection.wait``, as CPython's own executor does.
A worker that ends while it holds a task raises :class:`~mpdemo.errors.WorkerDied`, naming how
it ended and which task it held. The pool then stops its other workers; its next task starts
new ones. Workers leave by themselves when the caller dies (:func:`mpdemo.context.worker_setup`).

**Other executors.** :class:`OnExecutor` gives any ``concurrent.futures.Executor`` the same
three methods (``send``, ``receive``, ``forget``), so ``chunked_map`` and the CSV pipeline run
unchanged on a ``ProcessPoolExecutor``, threads, loky or a dask cluster.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import selectors
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

from mpdemo.context import describe_exit, get_context, process_count, start_process
from mpdemo.errors import NotSendable, WorkerDied, WorkerTraceback, sendable

#: Tasks a worker holds at most: the one it runs, and the next, already in its pipe.
DEPTH = 2
#: Tasks up to this size are written at once: ``DEPTH`` of them fit in any pipe (8 KB on Windows).
DIRECT_BYTES = 2048
#: The message that tells a worker to leave (a pickle is never empty).
STOP = b""
#: A task that does nothing: a worker that answers it is up and ready.
PROBE = pickle.dumps((abs, (0,)))


class Call(NamedTuple):
    """One task: ``runner(*args)`` in a worker. ``what`` names it in errors ("items 40–79");
    ``caller_seconds``: what preparing it cost the caller (pickling its data), for the timeline."""

    runner: Callable[..., Any]
    args: tuple
    what: str
    caller_seconds: float = 0.0

    def pickled(self) -> bytes:
        """The bytes that travel: the runner and its arguments, pickled."""
        try:
            return pickle.dumps((self.runner, self.args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise NotSendable(f"{self.what} cannot be sent to a worker process: {type(error).__name__}: "
                              f"{error}") from error


class Failed(NamedTuple):
    """A task that failed outside the work it was given (it could not be unpickled, or the runner
    itself raised): the exception, and the worker's traceback as text."""

    error: BaseException
    traceback: str


# ── The worker side ──────────────────────────────────────────────────────────────────────────


def serve(tasks: Connection, replies: Connection) -> None:
    """A worker's whole life: take a task, run it, send its reply; until STOP or the pipe ends."""
    while True:
        try:
            message = tasks.recv_bytes()
        except EOFError:  # the caller closed our pipe, or is gone
            return
        if message == STOP:
            return
        replies.send_bytes(run_message(message))


def run_message(message: bytes) -> bytes:
    """Unpickle a task, run it, and pickle its reply here, in the worker; never raises.

    What goes wrong outside the work itself comes back as :class:`Failed`: a task that cannot be
    unpickled here, a runner that raised, a reply that cannot be pickled. (The runners of
    ``chunked_map`` and the CSV pipeline catch their row function's errors themselves and pickle
    their results themselves, so that they can name the item or line.) A standard-library
    ``ProcessPoolExecutor`` runs tasks through this function too, so that they are pickled once
    there as well.
    """
    try:
        runner, args = pickle.loads(message)
    except BaseException as error:
        return _pickled(Failed(NotSendable(f"the worker could not unpickle its task: {type(error).__name__}: "
                                           f"{error}{_main_hint(error)}"), traceback.format_exc()))
    try:
        reply = runner(*args)
    except BaseException as error:
        return _pickled(Failed(sendable(error), traceback.format_exc()))
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        return _pickled(Failed(NotSendable(f"the task's reply cannot be sent back from the worker: "
                                           f"{type(error).__name__}: {error}"), traceback.format_exc()))


def _main_hint(error: BaseException) -> str:
    if "__main__" not in str(error) and "__mp_main__" not in str(error):
        return ""
    return (". It is defined in __main__ (a notebook cell), and this worker does not have it: a fork worker "
            "started before it was defined has no copy of it. Start the pool after defining it, or move it into "
            "a module (a .py file beside your notebook) and import it from there")


def _pickled(reply: Any) -> bytes:
    return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)


def open_reply(body: bytes) -> Any:
    """The reply a worker pickled; a :class:`Failed` task raises its error here, in the caller."""
    return raise_failed(pickle.loads(body))


def raise_failed(reply: Any) -> Any:
    """``reply``, unless it is a :class:`Failed`: then its error is raised, with the worker's traceback."""
    if isinstance(reply, Failed):
        reply.error.__cause__ = WorkerTraceback(reply.traceback)
        raise reply.error
    return reply


# ── The caller side ──────────────────────────────────────────────────────────────────────────


@dataclass(eq=False)
class Worker:
    """One worker process as the caller sees it: its pipes, its sender thread, its tasks."""

    process: BaseProcess
    tasks: Connection  # the caller's end: write only
    replies: Connection  # the caller's end: read only
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # for the sender thread
    outstanding: deque = field(default_factory=deque)  # tickets sent, oldest first
    threaded: set = field(default_factory=set)  # those of them handed to the sender thread
    ran: int = 0  # tasks it finished

    def send(self, ticket: int, message: bytes) -> None:
        """Write a small task at once, unless the sender thread still has one to write before it
        (it fits in the pipe whatever the worker is doing); hand anything else to the thread."""
        if len(message) <= DIRECT_BYTES and not self.threaded:
            try:
                self.tasks.send_bytes(message)
            except OSError:  # the worker is gone; receive() says so
                pass
        else:
            self.threaded.add(ticket)
            self.outbox.put(message)
        self.outstanding.append(ticket)

    def replied(self) -> int:
        """The ticket of the task the worker just replied to: its oldest. It has read every task up to
        that one, so the sender thread has written them all."""
        ticket = self.outstanding.popleft()
        self.threaded.discard(ticket)
        self.ran += 1
        return ticket

    def stop_sending(self) -> None:
        self.outbox.put(None)


def _sender(tasks: Connection, outbox: queue.SimpleQueue) -> None:
    """A worker's sender thread: write each message into its task pipe, however long that takes;
    at ``None``, close the pipe. (The caller writes small tasks itself, but only while this thread
    has nothing to write, and never after asking it to stop: so closing here is safe.)"""
    try:
        while (message := outbox.get()) is not None:
            tasks.send_bytes(message)
    except OSError:  # the worker is gone; receive() says so
        pass
    finally:
        tasks.close()


class Watch:
    """What the caller waits on: every worker's reply pipe and its sentinel, each with its worker.

    ``multiprocessing.connection.wait`` waits on pipes and sentinels together on every system,
    but registers them all anew on every call. On POSIX a selector keeps them registered, which
    saves about 20 µs per wait: a good share of a short task. (On Windows ``wait`` is the way.)
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector() if os.name == "posix" else None
        self._watched: dict[Any, tuple[Worker, bool]] = {}  # pipe or sentinel -> (worker, is its pipe)

    def add(self, worker: Worker) -> None:
        for thing, is_pipe in ((worker.replies, True), (worker.process.sentinel, False)):
            self._watched[thing] = worker, is_pipe
            if self._selector is not None:
                self._selector.register(thing, selectors.EVENT_READ, (worker, is_pipe))

    def remove(self, worker: Worker) -> None:
        for thing in (worker.replies, worker.process.sentinel):
            if self._watched.pop(thing, None) is not None and self._selector is not None:
                self._selector.unregister(thing)

    def wait(self) -> list[tuple[Worker, bool]]:
        """Block until a reply or a worker's end is ready; ``(worker, True)`` for a reply."""
        if self._selector is not None:
            return [key.data for key, _ in self._selector.select()]
        return [self._watched[thing] for thing in wait_for(list(self._watched))]


class ProcessPool:
    """Worker processes kept for as many calls as you like (see the module doc).

    Pass it as ``executor=`` to ``chunked_map``, ``process_csv``, ``parallel_apply``,
    ``memmap.file_apply``: their calls then start no process. Use it in a ``with`` block, which
    stops the workers at its end, also on an error or Ctrl-C::

        with mpdemo.ProcessPool(2) as pool:
            mpdemo.chunked_map(f, rows, executor=pool)
            mpdemo.chunked_map(g, rows, executor=pool)   # the same warm workers

    Workers start as tasks need them (``warm()`` starts them all and waits until each has
    answered). A pool that lost a worker, or was interrupted, starts new workers on its next task.
    A pool that is dropped without ``close()`` stops its workers; so does the end of this process,
    however it ends (each worker watches its parent).
    """

    def __init__(self, processes: int | None = None, *, method: str | None = None) -> None:
        self.processes = process_count(processes)
        self.method = method
        self._workers: list[Worker] = []
        self._backlog: deque[tuple[int, bytes]] = deque()
        self._tickets = itertools.count()
        self._forgotten: set[int] = set()  # tickets whose replies nobody waits for any more
        self._replies: deque[tuple[int, bytes]] = deque()  # replies taken in, not yet handed out
        self._watch = Watch()
        self._finalizer = weakref.finalize(self, _stop_now, self._workers)
        self.closed = False

    # the three methods the engine uses (chunking.in_flight)

    def send(self, call: Call) -> int:
        """Pickle ``call`` and give it to a worker with room (or the backlog); returns its ticket."""
        if self.closed:
            raise RuntimeError("this ProcessPool is closed: make a new one")
        message = call.pickled()
        ticket = next(self._tickets)
        worker = self._worker_with_room()
        if worker is None:
            self._backlog.append((ticket, message))
        else:
            worker.send(ticket, message)
        return ticket

    def receive(self) -> tuple[int, Any]:
        """The next reply: ``(ticket, reply)``. Waits for a reply or a worker's end, nothing else."""
        while not self._replies:
            if not any(worker.outstanding for worker in self._workers):
                raise RuntimeError("receive() with no task in flight would wait forever")
            self._collect()
        ticket, body = self._replies.popleft()
        return ticket, open_reply(body)

    def _collect(self) -> None:
        """Wait once for replies and ended workers, and take in what is ready (replies first: a
        worker may have replied just before it ended)."""
        ready = self._watch.wait()
        for worker in [worker for worker, is_pipe in ready if is_pipe]:
            try:
                body = worker.replies.recv_bytes()
            except EOFError:  # it ended; its sentinel says how
                continue
            ticket = worker.replied()
            self._refill(worker)
            if ticket in self._forgotten:
                self._forgotten.discard(ticket)
            else:
                self._replies.append((ticket, body))
        for worker in [worker for worker, is_pipe in ready if not is_pipe]:
            if worker in self._workers:
                self._ended(worker)

    def forget(self) -> None:
        """Nobody waits for the tasks in flight any more: drop the backlog, discard their replies."""
        self._backlog.clear()
        self._replies.clear()
        for worker in self._workers:
            self._forgotten.update(worker.outstanding)

    # looking after the workers

    def _worker_with_room(self) -> Worker | None:
        """An idle worker; else a new one, while fewer than ``processes`` run; else the least busy
        with fewer than ``DEPTH`` tasks; else None (the task waits in the backlog)."""
        least = min(self._workers, key=lambda worker: len(worker.outstanding), default=None)
        if least is not None and not least.outstanding:
            return least
        if len(self._workers) < self.processes:
            return self._start_worker()
        if least is not None and len(least.outstanding) < DEPTH:
            return least
        return None

    def _start_worker(self) -> Worker:
        ctx = get_context(self.method)
        task_out, task_in = ctx.Pipe(duplex=False)  # (reader, writer)
        reply_out, reply_in = ctx.Pipe(duplex=False)
        process = start_process(serve, task_out, reply_in, name=f"mpdemo-worker-{len(self._workers)}",
                                method=self.method)
        task_out.close()  # the worker's ends: ours closed, so that its pipes end with it
        reply_in.close()
        worker = Worker(process, task_in, reply_out)
        threading.Thread(target=_sender, args=(task_in, worker.outbox), name=f"{process.name}-sender",
                         daemon=True).start()
        self._workers.append(worker)
        self._watch.add(worker)
        return worker

    def _refill(self, worker: Worker) -> None:
        if self._backlog and len(worker.outstanding) < DEPTH:
            worker.send(*self._backlog.popleft())

    def _ended(self, worker: Worker) -> None:
        """A worker ended: raise :class:`WorkerDied` if it held a task we wait for; else replace it."""
        worker.process.join()
        held = [ticket for ticket in worker.outstanding if ticket not in self._forgotten]
        self._forgotten.difference_update(worker.outstanding)  # their replies will never come
        self._workers.remove(worker)
        self._watch.remove(worker)
        _close_pipes(worker)
        if not held:  # it held nothing of ours (killed while idle, or while running forgotten work)
            while self._backlog and (replacement := self._worker_with_room()) is not None:
                replacement.send(*self._backlog.popleft())
            return
        how = describe_death(worker, running_first_task=worker.ran == 0)
        self.terminate()
        raise WorkerDied(f"a worker process died unexpectedly: pid {worker.process.pid} {how}; its task and "
                         "every other task in flight are lost", held[0])

    def warm(self) -> ProcessPool:
        """Start every worker and wait until each has answered once: time work, not start-up."""
        while len(self._workers) < self.processes:
            self._start_worker()
        for worker in self._workers:
            ticket = next(self._tickets)
            self._forgotten.add(ticket)  # nobody waits for a probe's reply
            worker.send(ticket, PROBE)
        while any(worker.outstanding for worker in self._workers):
            self._collect()
        return self

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [worker.process.pid for worker in self._workers]

    def terminate(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL), whatever it is doing; drop every task.

        The pool stays usable: its next task starts new workers.
        """
        workers, self._workers[:] = list(self._workers), []
        for worker in workers:
            self._watch.remove(worker)
        self._backlog.clear()
        self._replies.clear()
        self._forgotten.clear()
        _stop_now(workers)

    def close(self) -> None:
        """Let the workers finish the tasks they hold, then leave; stop any that do not within 10 s."""
        if self.closed:
            return
        self.closed = True
        for worker in self._workers:
            worker.outbox.put(STOP)
            worker.stop_sending()
        for worker in self._workers:
            worker.process.join(10)
        self.terminate()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, kind: type | None, *rest: object) -> None:
        if kind is not None:  # an error or Ctrl-C: do not wait for work nobody will collect
            self.terminate()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._workers)} of {self.processes} workers running"
        return f"ProcessPool({self.processes}, {state})"


def _close_pipes(worker: Worker) -> None:
    worker.stop_sending()  # its sender thread closes the task pipe
    worker.replies.close()


def _stop_now(workers: list[Worker]) -> None:
    """Stop workers now (:func:`stop_processes`) and close their pipes."""
    stop_processes([worker.process for worker in workers])
    for worker in workers:
        _close_pipes(worker)
    workers.clear()


def stop_processes(processes: list[BaseProcess], grace: float = 2.0) -> None:
    """Terminate processes now (SIGTERM), and SIGKILL any still there after ``grace`` seconds."""
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(5)


def describe_death(worker: Worker, running_first_task: bool) -> str:
    """How a worker holding a task ended, in words, with what it most likely means."""
    code = worker.process.exitcode
    how = describe_exit(code)
    if code is not None and code < 0:
        return how + SIGNAL_HINTS.get(-code, "")
    if running_first_task and code == 1:
        return how + (" before it finished its first task: it may have failed to start (under spawn it imports "
                      "your __main__ module again; its error went to the terminal running Python)")
    return how + (" while running its task, without a Python exception: the function, or a library it called, "
                  "ended the process (os._exit, or an abort inside C code)")


#: What a signal that killed a worker most likely means.
SIGNAL_HINTS = {
    9: " (the out-of-memory killer, or kill -9?)",
    7: (" (a bus error: memory it used was not there. Most often a shared-memory block larger than what "
        "/dev/shm has free, as in a container's 64 MB: give it more, e.g. docker run --shm-size=1g, use a "
        "smaller array, or a memory-mapped file instead; or a memory-mapped file that shrank)"),
    11: " (a segmentation fault: a crash inside C code, or memory used after it was unmapped)",
}


# ── Any other executor, with the same three methods ─────────────────────────────────────────


class OnExecutor:
    """A ``concurrent.futures.Executor`` with :class:`ProcessPool`'s ``send``/``receive``/``forget``.

    A standard-library ``ProcessPoolExecutor`` gets each task pickled once, here, and runs it
    through :func:`run_message`; threads get the call itself (nothing to pickle); other
    executors (dask, loky) get the call itself too, and pickle it their own way (cloudpickle).
    """

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.pickles_here = type(executor) is ProcessPoolExecutor
        self._pending: dict[Future, int] = {}
        self._tickets = itertools.count()

    def send(self, call: Call) -> int:
        ticket = next(self._tickets)
        if self.pickles_here:
            future = self.executor.submit(run_message, call.pickled())
        else:
            future = self.executor.submit(call.runner, *call.args)
        self._pending[future] = ticket
        return ticket

    def receive(self) -> tuple[int, Any]:
        done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        ticket = self._pending.pop(future)
        try:
            result = future.result()
        except BrokenProcessPool as broken:
            raise WorkerDied(f"a worker process died unexpectedly ({describe_dead_workers(self.executor)}); the "
                             "pool is broken and every task in flight is lost", ticket) from broken
        return ticket, open_reply(result) if self.pickles_here else raise_failed(result)

    def forget(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


def is_threads(executor: Executor | None) -> bool:
    """Whether ``executor`` runs tasks in this process (threads share its memory: nothing is pickled)."""
    return isinstance(executor, ThreadPoolExecutor)


def executor_processes(executor: Executor) -> list[BaseProcess]:
    """The worker processes of a standard-library process pool (it keeps them privately)."""
    return list((getattr(executor, "_processes", None) or {}).values())


def describe_dead_workers(executor: Executor, wait: float = 1.0) -> str:
    """How a broken ``ProcessPoolExecutor``'s workers ended, in words.

    A broken pool terminates its remaining workers itself (SIGTERM), so those are named only
    when no worker ended another way. Waits up to ``wait`` seconds for the pool to reap them.
    """
    processes = executor_processes(executor)
    deadline = time.monotonic() + wait
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        wait_for([p.sentinel for p in processes if p.exitcode is None], max(0.0, deadline - time.monotonic()))
    codes = {p.pid: p.exitcode for p in processes if p.exitcode}
    first = {pid: code for pid, code in codes.items() if code != -15} or codes
    text = "; ".join(f"pid {pid} {describe_exit(code)}{SIGNAL_HINTS.get(-code, '')}" for pid, code in first.items())
    return text or "killed by a signal or the out-of-memory killer?"


def stop_executor(executor: Executor, grace: float = 2.0) -> None:
    """Stop a process pool executor now: terminate its workers, cancel what is queued, do not wait.

    The pool is unusable afterwards. Other executors are only shut down without waiting.
    """
    processes = executor_processes(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    stop_processes(processes, grace)


@contextlib.contextmanager
def workers_for(executor: Any, processes: int) -> Iterator[ProcessPool | OnExecutor]:
    """The workers one parallel call runs on, and what happens to them when it ends.

    ``executor=None``: a :class:`ProcessPool` of ``processes`` for this call only, closed at the end
    (stopped at once on an error or Ctrl-C). A ``ProcessPool`` you pass stays open; on Ctrl-C its
    workers are stopped (its next task starts new ones). Another executor stays yours too; on
    Ctrl-C a process pool's workers are stopped and it accepts no more work, threads are left to
    finish what they run (their queued tasks are cancelled).
    """
    if executor is None:
        with ProcessPool(processes) as pool:
            yield pool
        return
    workers = executor if isinstance(executor, ProcessPool) else OnExecutor(executor)
    try:
        yield workers
    except KeyboardInterrupt:
        if isinstance(workers, ProcessPool):
            workers.terminate()
        elif not is_threads(executor):
            stop_executor(executor)
        raise
