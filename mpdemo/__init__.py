"""mpdemo: the package behind the course on processing many rows with Python multiprocessing.

One module per mechanism; the names below are the public API the notebooks use.
"""

from mpdemo.chunking import WorkerDied, WorkerError, chunked_map, default_chunksize, suggest_chunksize
from mpdemo.context import check, cpu_count, get_context, start_method
from mpdemo.guard import NotSendable


def show(obj: object):
    """The source code of an mpdemo function, class or module, as IPython's highlighted ``Code``.

    The notebooks use it to show the real worker code instead of a simplified copy.
    """
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


__all__ = [
    "NotSendable",
    "WorkerDied",
    "WorkerError",
    "check",
    "chunked_map",
    "cpu_count",
    "default_chunksize",
    "get_context",
    "show",
    "start_method",
    "suggest_chunksize",
]

# Lesson 03: the streaming CSV pipeline.
from mpdemo.pipeline import CsvStream, PipelineResult, RowError, process_csv, stream_csv  # noqa: E402

__all__ += ["CsvStream", "PipelineResult", "RowError", "process_csv", "stream_csv"]

# Lesson 04: shared memory.
from mpdemo.shm import BlockError, SharedArray, parallel_apply  # noqa: E402

__all__ += ["BlockError", "SharedArray", "parallel_apply"]
