"""mpdemo: the package behind the course on processing many rows with Python multiprocessing.

One module per mechanism; the names below are the public API the notebooks use.
"""

import inspect

from mpdemo.checks import check
from mpdemo.chunking import chunked_map, default_chunksize, suggest_chunksize
from mpdemo.context import cpu_count, get_context, start_method
from mpdemo.errors import (BlockError, FileChanged, FrameError, NotEnoughSharedMemory, NotSendable, RowError,
                           SplitError, WorkerDied, WorkerError)
from mpdemo.frames import frame_apply, process_parquet
from mpdemo.pipeline import CsvStream, PipelineResult, process_csv, stream_csv
from mpdemo.pool import ProcessPool
from mpdemo.shm import SharedArray, parallel_apply


def show(obj: object):
    """The source code of an mpdemo function, class or module, as IPython's highlighted ``Code``.

    The notebooks use it to show the real worker code instead of a simplified copy.
    """
    from IPython.display import Code  # IPython is there in a notebook; scripts never call show()

    return Code(inspect.getsource(obj), language="python")


__all__ = [
    "BlockError",
    "CsvStream",
    "FileChanged",
    "FrameError",
    "NotEnoughSharedMemory",
    "NotSendable",
    "PipelineResult",
    "ProcessPool",
    "RowError",
    "SharedArray",
    "SplitError",
    "WorkerDied",
    "WorkerError",
    "check",
    "chunked_map",
    "cpu_count",
    "default_chunksize",
    "frame_apply",
    "get_context",
    "parallel_apply",
    "process_csv",
    "process_parquet",
    "show",
    "start_method",
    "stream_csv",
    "suggest_chunksize",
]
