"""Shared memory: one block of RAM mapped by several processes, so an array crosses without a copy.

Who creates, attaches, closes and unlinks a block::

      the owner (creates the block)                        worker processes
      ─────────────────────────────                        ────────────────
      SharedArray.create(shape, dtype)
        block /psm_1a2b… (0600: its owner's only),
        registered with the resource tracker
        .array: a NumPy view of the block ──┐
                                             │  the same RAM, no copy
      pickle.dumps(shared): a handle ────────┼──► SharedArray: attaches by name, not registered
        (name, shape, dtype: ~120 bytes)     └──► .array: a view of the same block
                                                  close(): unmaps it here, nothing else
      close(): unmaps; being the owner, also unlinks (removes the name) — exactly once:
        at the end of its ``with`` block, on an exception or Ctrl-C there,
        or when the owner is garbage-collected

**The handle.** Pickling a :class:`SharedArray` sends its name, shape and dtype, never the
data; unpickling attaches to the block. Shape and dtype travel in the handle because the block
cannot say them: it holds bytes, and its size may be rounded up to whole pages (macOS does).
Only the process that created the block is its *owner*; a received handle never is, so a
worker can never remove the block from under the others.

**Closing.** A block is unmapped only when no NumPy view of it is left in the process. Unmapping
under a live view is what crashes anti-pattern 3 (exit status 139): ``np.ndarray(buffer=block.buf)``
holds no claim on the memory, so ``block.close()`` succeeds and the next access to the view
touches memory that is gone. ``.array`` is made with ``np.frombuffer``, which holds the block's
buffer, so the unmapping waits for the last view; :meth:`SharedArray.close` never crashes, and a
view you kept stays valid after it.

**The resource tracker** (CPython's ``multiprocessing/resource_tracker.py`` and
``shared_memory.py``). A helper process that removes blocks their creator left behind when it
died. ``SharedMemory.__init__`` registers the block's name with it on *create and on attach*
alike (``resource_tracker.register(self._name, "shared_memory")``), and the tracker keeps the
names in a set (``cache[rtype].add(name)``, ``.remove(name)`` on unregister). Processes started
by ``multiprocessing`` share their parent's tracker: spawn hands its pipe to the child
(``spawn_main(..., tracker_fd)``), fork inherits it, and the fork server passes it on. Hence:

* a worker that calls ``resource_tracker.unregister`` after attaching removes the *creator's*
  entry (the set holds the name once), and the creator's ``unlink()`` then makes the tracker
  print a ``KeyError`` traceback;
* a process with a tracker of its own (a second notebook kernel, a script started by hand)
  registers the name there, and its tracker *unlinks the block when that process exits*,
  while the others still use it (CPython gh-82300).

So an attach here never registers: ``track=False`` on Python 3.13+, and on 3.10–3.12 the
registration is skipped while the block is opened (:func:`open_block`). Only the owner's
registration remains, and the tracker removes the block only if the owner dies without
unlinking it (killed, say).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

from mpdemo.blocks import map_blocks, row_blocks
from mpdemo.context import process_count, require_whole
from mpdemo.errors import NotEnoughSharedMemory
from mpdemo.machine import SHM, megabytes, shm_space
from mpdemo.pool import ProcessPool
from mpdemo.timing import Timeline


class SharedArray:
    """A NumPy array in a shared-memory block, and a context manager for the block's life.

    Make one with :meth:`create` or :meth:`from_array` and use it in a ``with`` block; send it to
    workers as an argument (it pickles as a small handle, which attaches on first use). ``.array``
    is the NumPy view; ``.name``, ``.shape``, ``.dtype`` describe it; ``.owner`` says whether this
    process created it.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any,
                 block: shared_memory.SharedMemory | None = None) -> None:
        """A handle on the block ``name``; pass ``block`` only when this process created it (see
        :meth:`create`). Without it, the block is attached on first use of ``.array``."""
        self.name, self.shape, self.dtype = name, tuple(shape), np.dtype(dtype)
        self._array: np.ndarray | None = None
        self._closed = False
        self._unlink = None
        self._owner_pid = os.getpid() if block is not None else None
        if block is not None:  # the owner: it unlinks the block, once, even if it forgets to
            self._view(block)
            self._unlink = weakref.finalize(self, unlink_block, block, self._owner_pid)

    @classmethod
    def create(cls, shape: int | tuple[int, ...], dtype: Any = np.float64) -> SharedArray:
        """A new block for an array of ``shape`` and ``dtype`` (filled with zeros); this process owns it.

        The block's memory is reserved at once, so a ``/dev/shm`` too small for it raises
        :class:`~mpdemo.errors.NotEnoughSharedMemory` here (see :func:`reserve`), never a crash later.
        """
        shape, dtype = checked_layout(shape, dtype)
        size = max(1, math.prod(shape) * dtype.itemsize)
        refuse_if_too_large(size)
        block = shared_memory.SharedMemory(create=True, size=size)
        try:
            reserve(block)
            return cls(block.name, shape, dtype, block)
        except BaseException:  # never leave a block behind, whatever went wrong
            block.close()
            block.unlink()
            raise

    @classmethod
    def from_array(cls, array: np.ndarray) -> SharedArray:
        """A new block holding a copy of ``array``; this process owns it."""
        array = np.asarray(array)
        shared = cls.create(array.shape, array.dtype)
        shared.array[...] = array
        return shared

    @classmethod
    def attach(cls, name: str, shape: tuple[int, ...], dtype: Any) -> SharedArray:
        """Attach now to the block called ``name``, which another process created."""
        shared = cls(name, shape, dtype)
        shared.array  # noqa: B018 (attaches, or raises FileNotFoundError)
        return shared

    @property
    def owner(self) -> bool:
        """Whether this process created the block (a forked child's copy of the owner is not)."""
        return self._owner_pid == os.getpid()

    @property
    def array(self) -> np.ndarray:
        """The NumPy view of the block: the same memory in every process that attached it."""
        if self._array is None:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            self._view(attach_block(self.name))
        return self._array

    def _view(self, block: shared_memory.SharedMemory) -> None:
        count = math.prod(self.shape)
        if block.size < count * self.dtype.itemsize:
            raise ValueError(f"block {self.name} holds {block.size:,} bytes, too few for {self.shape} {self.dtype}")
        self._array = np.frombuffer(block.buf, self.dtype, count).reshape(self.shape)
        # The block is unmapped when the last view of it goes (see "Closing" in the module doc).
        weakref.finalize(_memory_of(self._array), block.close).atexit = False

    def close(self) -> None:
        """Stop using the block here; the owner also unlinks it, so no new process can attach.

        Views of ``.array`` that you still hold keep their memory mapped, and stay valid, until the
        last of them goes. Closing twice does nothing.
        """
        self._array, self._closed = None, True  # the finalizer of _view unmaps once no view is left
        if self._unlink is not None:
            self._unlink()  # a weakref.finalize runs at most once

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # also on an exception or a KeyboardInterrupt inside the block

    def __reduce__(self) -> tuple[Callable, tuple]:
        """Pickle as a handle: name, shape and dtype. The receiver is never the owner."""
        if self._closed:
            raise ValueError(f"{self!r} is closed: a closed SharedArray cannot be sent")
        return SharedArray, (self.name, self.shape, self.dtype)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "owner" if self.owner else "attached" if self._array is not None \
            else "not attached yet"
        return f"SharedArray(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, {state})"


def _memory_of(array: np.ndarray) -> object:
    """The object at the end of a view's ``.base`` chain: here, the memoryview that ``np.frombuffer``
    made, which every view of the array keeps alive (and with it, its claim on the block)."""
    while isinstance(array, np.ndarray):
        array = array.base
    return array


#: Only one thread at a time may swap out ``resource_tracker.register`` (Python 3.10–3.12).
_REGISTER_LOCK = threading.Lock()
_register = resource_tracker.register


def _register_unless_shared_memory(name: str, rtype: str) -> None:
    if rtype != "shared_memory":
        _register(name, rtype)


def open_block(name: str) -> shared_memory.SharedMemory:
    """Attach to an existing block without registering it with the resource tracker.

    Python 3.13 has ``track=False`` for this. Before, ``SharedMemory(name)`` always registers (see
    the module doc), so for the moment it opens the block, registration is skipped for shared
    memory (in this process: a block that another thread creates at that very moment would not
    be registered either). Raises ``FileNotFoundError`` when no block has that name (any more).
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    with _REGISTER_LOCK:
        resource_tracker.register = _register_unless_shared_memory
        try:
            return shared_memory.SharedMemory(name)
        finally:
            resource_tracker.register = _register


def attach_block(name: str) -> shared_memory.SharedMemory:
    """:func:`open_block`, with an error that says why a block can be missing."""
    try:
        return open_block(name)
    except FileNotFoundError:
        raise FileNotFoundError(f"no shared-memory block is called {name!r} any more: its owner closed it, or a "
                                "process with a resource tracker of its own removed it when it exited "
                                "(see mpdemo.shm)") from None


def unlink_block(block: shared_memory.SharedMemory, owner_pid: int) -> None:
    """Remove a block's name: the owner's job, done by the process ``owner_pid`` only.

    A child made by ``fork`` has a copy of the owner's objects, finalizers included; the pid
    check keeps it from removing the block. If a process with a tracker of its own removed the
    name first (gh-82300), ``unlink()`` raises ``FileNotFoundError`` before it unregisters the
    name, and our tracker would try again at exit and warn about a leak: unregister it here.
    """
    if os.getpid() != owner_pid:
        return
    try:
        block.unlink()
    except FileNotFoundError:
        if sys.platform != "win32":
            resource_tracker.unregister(f"/{block.name}", "shared_memory")


def exists(name: str) -> bool:
    """Whether a block called ``name`` exists: whether a process could attach to it now."""
    try:
        open_block(name).close()
    except FileNotFoundError:
        return False
    return True


def checked_layout(shape: int | tuple[int, ...], dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    """``shape`` as a tuple and ``dtype`` as a NumPy dtype, refused with a clear error when no array
    can have them (before any block is made)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"shape {shape} must be whole numbers of at least 0")
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(f"a {dtype} array holds pointers into one process's memory: it cannot be shared")
    if dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype.str.lstrip('|<>=')} has items of 0 bytes: give it a size (such as 'S10' or "
                         "'V8')")
    return shape, dtype


#: What to do when /dev/shm is too small, in every message that says so.
SHM_CURE = ("Give /dev/shm more room (docker run --shm-size=2g; on Kubernetes or a JupyterHub, mount a "
            "memory-backed emptyDir volume at /dev/shm), share a smaller array, or keep the data in a memory-mapped "
            "file instead (mpdemo.memmap, notebook 05).")


def refuse_if_too_large(size: int) -> None:
    """Raise :class:`~mpdemo.errors.NotEnoughSharedMemory` now if ``/dev/shm`` has less than ``size`` free."""
    space = shm_space()
    if space is not None and size > space.free:
        raise NotEnoughSharedMemory(f"a shared-memory block of {megabytes(size)} does not fit: /dev/shm has "
                                    f"{megabytes(space.free)} free of {megabytes(space.total)}. {SHM_CURE}")


def reserve(block: shared_memory.SharedMemory) -> None:
    """Make the kernel set the block's memory aside now (Linux: ``posix_fallocate`` in ``/dev/shm``).

    A new block is a *sparse* file in ``/dev/shm``: creating one larger than the free space
    succeeds, and the first write past the free space kills the process with SIGBUS (a dead
    kernel, with no Python error at all). Reserving the pages up front turns that into an
    ``OSError`` here. Elsewhere (macOS, Windows) there is no ``/dev/shm`` and nothing to do.
    """
    path = SHM / block.name
    if not hasattr(os, "posix_fallocate") or not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, block.size)
    except OSError as error:
        space = shm_space()
        raise NotEnoughSharedMemory(f"a shared-memory block of {megabytes(block.size)} does not fit: /dev/shm has "
                                    f"{megabytes(space.free)} free of {megabytes(space.total)} "
                                    f"({error.strerror}). {SHM_CURE}") from None
    finally:
        os.close(fd)


# ── parallel_apply: disjoint row blocks, no lock ────────────────────────────────────────────


def apply_block(func: Callable[[np.ndarray], Any], source: SharedArray, out: SharedArray | None,
                rows: tuple[int, int]) -> Any:
    """Runs in a worker: ``func`` on rows ``start:stop`` of the shared array.

    ``source`` and ``out`` arrived as handles, attached when they were unpickled, and are
    unmapped when this task drops them. No other worker touches these rows, so no lock is
    needed. With ``out`` the result is written into the same rows of ``out`` and nothing is
    sent back; otherwise the result is returned (and pickled back).
    """
    start, stop = rows
    result = func(source.array[start:stop])
    if out is None:
        return result
    out.array[start:stop] = result
    return None


def parallel_apply(func: Callable[[np.ndarray], Any], array: SharedArray | np.ndarray, *,
                   processes: int | None = None, out: SharedArray | None = None, blocks: int | None = None,
                   executor: Executor | ProcessPool | None = None, timeline: Timeline | None = None
                   ) -> list | np.ndarray:
    """``func(block)`` on disjoint row blocks of a shared array, in worker processes; no lock needed.

    array: a :class:`SharedArray`, which workers attach to; or a NumPy array, copied into a
        shared block for this call (one copy here; nothing is pickled).
    processes: workers (default :func:`mpdemo.cpu_count`).
    out: a :class:`SharedArray` with as many rows; each worker writes ``func(block)`` into its
        rows of it, so results are never pickled back.
    blocks: how many row blocks (default: one per process); every row is in exactly one.
    executor, timeline: as for :func:`mpdemo.chunked_map`, which runs the blocks (chunk size 1).

    Returns ``[func(block) for block in blocks]`` in row order, e.g. per-block partial results of a
    reduction to combine here (``sum(parallel_apply(np.sum, a))``); with ``out``, ``out.array``.
    A failing block raises :class:`~mpdemo.errors.BlockError` naming its rows. A dead worker,
    Ctrl-C and anything that cannot be pickled behave as in ``chunked_map``; the blocks are
    unlinked whatever happens.
    """
    processes = process_count(processes, executor)
    if blocks is not None:
        require_whole("blocks", blocks)
    if out is not None and not isinstance(out, SharedArray):
        raise TypeError(f"out= must be a SharedArray, not {type(out).__name__}: workers cannot write into "
                        "this process's own arrays")
    if not isinstance(array, SharedArray):
        with SharedArray.from_array(array) as shared:
            return parallel_apply(func, shared, processes=processes, out=out, blocks=blocks, executor=executor,
                                  timeline=timeline)
    if not array.shape:
        raise ValueError("parallel_apply splits an array into rows: it needs at least one dimension")
    rows = array.shape[0]
    if out is not None and out.shape[:1] != (rows,):
        raise ValueError(f"out has shape {out.shape}, but the array has {rows:,} rows")
    task = functools.partial(apply_block, func, array, out)
    results = map_blocks(task, row_blocks(rows, blocks or processes), processes=processes, executor=executor,
                         timeline=timeline)
    return results if out is None else out.array
