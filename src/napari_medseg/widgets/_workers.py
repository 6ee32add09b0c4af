"""The one place that starts background jobs for the widgets, reports progress and handles errors.

A job is a plain function ``fn(progress=, should_stop=)`` (the callbacks the core API takes). It
runs in napari's worker thread; its ``progress(done, total, message)`` calls cross to the main
thread through a Qt signal (a queued connection, so the worker never touches a widget) and drive a
``napari.utils.cancelable_progress`` bar in the activity panel, whose text shows the ETA tqdm
computes. Cancelling (the widget's button or the bar's own cancel button) sets a flag that
``should_stop`` reads; the core checks it before every batch and raises ``Cancelled``.

Results, errors and cancellations come back to the main thread as calls of the ``on_*`` callbacks,
never as tracebacks: an error reaches ``on_error`` (the widget shows a notification).
``sync=True`` runs the job in the calling thread, for debugging.

Between two reports (a slow batch: big windows on a busy CPU) a 0.5 s timer refreshes the bar, so
its elapsed time and ETA keep moving and the user sees the job is alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_medseg.core.errors import Cancelled

log = logging.getLogger(__name__)


class Job(QObject):
    """One background run with a progress bar, a cancel flag and main-thread callbacks.

    Args:
        fn: ``fn(progress=..., should_stop=...)`` -> result.
        description: the activity panel's label.
        on_returned: ``f(result)`` after success (not called when cancelled).
        on_error: ``f(exception)`` after a failure other than a cancellation.
        on_cancelled: ``f()`` after a cancellation.
        on_finished: ``f()`` after any of them (re-enable buttons here).
        sync: run in the calling thread instead of a worker thread.
    """

    progressed = Signal(int, int, str)

    def __init__(self, fn: Callable[..., Any], description: str, *,
                 on_returned: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_cancelled: Callable[[], None] | None = None,
                 on_finished: Callable[[], None] | None = None, sync: bool = False):
        super().__init__()
        self.fn = fn
        self.description = description
        self.on_returned, self.on_error = on_returned, on_error
        self.on_cancelled, self.on_finished = on_cancelled, on_finished
        self.sync = sync
        self._stop = threading.Event()
        self.running = False
        self.progress_events = 0     # progress reports that reached the main thread
        self.windows_total = 0       # the total of the last report
        self.started_at: float | None = None
        self.cancelled_at: float | None = None
        self.pbar = None
        self.worker = None
        self._message = ""
        self.progressed.connect(self._on_progress)
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._refresh)

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        from napari.utils import cancelable_progress

        self.running = True
        self.started_at = time.perf_counter()
        self.pbar = cancelable_progress(total=0, desc=self.description)
        if self.sync:
            try:
                result = self._run()
            except BaseException as exc:  # noqa: BLE001 - routed to the callbacks like the worker's errors
                self._errored(exc)
            else:
                self._returned(result)
            self._finished()
            return
        from napari.qt.threading import create_worker

        self._tick.start()
        self.worker = create_worker(self._run, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def cancel(self) -> None:
        """Ask the job to stop; it does before its next batch, and no result is delivered."""
        if self.running and not self._stop.is_set():
            self.cancelled_at = time.perf_counter()
            self._stop.set()
            if self.pbar is not None:
                self.pbar.set_description(f"{self.description}: cancelling")

    def should_stop(self) -> bool:
        return self._stop.is_set() or bool(getattr(self.pbar, "is_canceled", False))

    # -- worker thread ---------------------------------------------------------------------------
    def _report(self, done: int, total: int, message: str = "") -> None:
        self.progressed.emit(int(done), int(total), str(message or ""))

    def _run(self) -> Any:
        return self.fn(progress=self._report, should_stop=self.should_stop)

    # -- main thread -----------------------------------------------------------------------------
    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress_events += 1
        self.windows_total = total
        pbar = self.pbar
        if pbar is None or not self.running:
            return
        if total and pbar.total != total:
            pbar.total = total
        if message and message != self._message and not self._stop.is_set():
            self._message = message
            pbar.set_description(f"{self.description}: {message}")
        if done != pbar.n:
            pbar.update(done - pbar.n)

    def _refresh(self) -> None:
        if self.pbar is not None and self.pbar.total:
            self.pbar.refresh()  # recomputes elapsed and ETA; napari shows them in the activity panel

    def _returned(self, result: Any) -> None:
        if self.should_stop():  # cancelled after the last check: drop the result, change nothing
            self._cancelled()
            return
        if self.on_returned is not None:
            self.on_returned(result)

    def _errored(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self._cancelled()
            return
        log.error("%s failed: %s", self.description, exc, exc_info=exc)
        if self.on_error is not None:
            self.on_error(exc)

    def _cancelled(self) -> None:
        if self.cancelled_at is not None:
            log.info("%s cancelled; stopped %.2f s after the request", self.description,
                     time.perf_counter() - self.cancelled_at)
        if self.on_cancelled is not None:
            self.on_cancelled()

    def _finished(self) -> None:
        self.running = False
        self._tick.stop()
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        if self.on_finished is not None:
            self.on_finished()
