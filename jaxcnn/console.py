"""What a training session shows and hears: the epoch line, progress bars, the notice of a long
compilation, and Ctrl-C or SIGTERM turned into a request to stop at the next step."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jaxcnn.spec import NetworkSpec
from jaxcnn.train import EpochResult


def print_epoch(result: EpochResult, epochs: int) -> None:
    print(
        f"epoch {result.epoch:>3}/{epochs}  train loss {result.train_loss:.4f} acc {100 * result.train_accuracy:6.2f}%"
        f"  test loss {result.test_loss:.4f} acc {100 * result.test_accuracy:6.2f}%"
        f"  {result.seconds:6.2f} s  {result.images_per_second:>9,.0f} img/s"
        + (f"  EMA acc {100 * result.test_accuracy_ema:6.2f}%" if result.test_accuracy_ema is not None else ""),
        flush=True,
    )
    wait = result.data_wait_seconds
    if wait is not None and wait > INPUT_BOUND_FRACTION * result.seconds:
        print(f"note: the steps waited {wait:.1f} s of the epoch's {result.seconds:.1f} s for data: training is "
              "input-bound; decode in more processes (--loader-workers N), and pack a folder of photos once "
              "(jaxcnn prepare)",
              flush=True)  # fmt: skip


INPUT_BOUND_FRACTION = 0.2
"""An epoch whose steps waited longer than this fraction of it for streamed data gets a note saying so."""


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """Turn SIGINT (Ctrl-C) and SIGTERM into a request that the loop polls after each step.

    The first signal lets the current step finish; a second Ctrl-C interrupts at once. Outside
    the main thread (where handlers cannot be installed) nothing changes.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


COMPILE_NOTICE_SECONDS = 10.0
"""After this long, a compilation still running is reported (and then again every minute)."""


@contextlib.contextmanager
def compile_notices(spec: NetworkSpec, enabled: bool) -> Iterator[None]:
    """Say that XLA is still compiling, with the elapsed time, so a deep network does not look hung."""
    done = threading.Event()

    def tick() -> None:
        start, wait = time.perf_counter(), COMPILE_NOTICE_SECONDS
        while not done.wait(wait):
            print(f"compiling {spec.name} ({len(spec.layers)} layers): {time.perf_counter() - start:.0f} s so far; "
                  "compile time grows with depth", file=sys.stderr, flush=True)  # fmt: skip
            wait = 60.0

    ticker = threading.Thread(target=tick, name="jaxcnn-compile-ticker", daemon=True) if enabled else None
    if ticker is not None:
        ticker.start()
    try:
        yield
    finally:
        done.set()
