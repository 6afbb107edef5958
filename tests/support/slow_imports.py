"""A test hook for worker processes: every batch an import writes takes IMPORT_BATCH_DELAY_S longer.

Loaded only by a worker a test starts with `--include tests.support.slow_imports`
(`CeleryProcess.worker(..., include=[...])`), after Django is set up and before
the pool forks, so production code carries no test sleep. The delay lands inside
the import's transaction, after the batch and its progress update: a window in
which a test can kill the worker with the transaction open.
"""
from __future__ import annotations

import functools
import time

from curation.services import imports

IMPORT_BATCH_DELAY_S = 0.8
_insert = imports.passages_insert


@functools.wraps(_insert)
def _slow_insert(**kwargs):
    written = _insert(**kwargs)
    time.sleep(IMPORT_BATCH_DELAY_S)
    return written


imports.passages_insert = _slow_insert
