"""One run in several processes (one per host or per accelerator): joining JAX's multi-process job, and the few
agreements a shared run folder needs (process 0 writes; the others wait for it, learn where, and fail with it).

Every process runs the same command. :func:`join` calls ``jax.distributed.initialize`` before anything touches
the devices: with an address, count and index given (a launch by hand), or letting JAX detect them from the
cluster's environment (Slurm, Open MPI, Kubernetes with the ``kubernetes`` package, TPU pods). Afterwards
``jax.devices()`` lists the devices of every process, so the training mesh spans them all; on CPUs the
collectives go through gloo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from jaxcnn.errors import JaxcnnError

JOIN_TIMEOUT_SECONDS = 300
"""How long a process waits for all the others at the coordinator before it gives up (JAX's own default)."""
JAX_HEARTBEAT_SECONDS = 20
"""A process that has not been heard from for this long is taken as gone by JAX's coordination service,
which then ends every other process (JAX's default is 100 s)."""
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
"""A launcher that sets one of these above 1 started several processes of one job: they join by themselves."""

T = TypeVar("T")


class DistributedError(JaxcnnError):
    """A multi-process job that cannot start, or a step another process failed."""


def launched_as_several() -> bool:
    """Whether a cluster launcher (Slurm's srun, mpirun) started this process as one of several."""
    values = (os.environ.get(name, "").strip() for name in CLUSTER_SIZE_VARIABLES)
    return any(value.isdigit() and int(value) > 1 for value in values)


def join(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
         timeout: int = JOIN_TIMEOUT_SECONDS) -> None:  # fmt: skip
    """Join the job: by hand when ``coordinator`` (``host:port`` of process 0), ``num_processes`` and
    ``process_id`` are given, else as the cluster's environment says. A DistributedError, naming the address
    tried, when the coordinator is not reached within ``timeout`` seconds."""
    given = (coordinator, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise DistributedError("a launch by hand needs all three of --coordinator HOST:PORT, --num-processes N and "
                               "--process-id I (0 to N-1)")  # fmt: skip
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise DistributedError(f"--process-id {process_id}: choose 0 to {num_processes - 1} (--num-processes "
                               f"{num_processes})")  # fmt: skip
    if coordinator is not None and process_id:  # process 0 is the coordinator; the others first wait for it
        _wait_for(coordinator, timeout)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # affects only the CPU backend
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=JAX_HEARTBEAT_SECONDS)  # fmt: skip
    except (RuntimeError, ValueError) as err:
        where = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the address the cluster gives"
        if coordinator is None and "coordinator_address" in str(err):
            raise DistributedError("--distributed: no cluster environment found (Slurm, Open MPI, Kubernetes); "
                                   "launch by hand with --coordinator HOST:PORT --num-processes N --process-id "
                                   "I") from None  # fmt: skip
        message = (f"could not join the job at {where} within {timeout} s ({str(err)[:300]}); check that process 0 "
                   "runs and that its host and port can be reached from here")  # fmt: skip
        raise DistributedError(message) from None
    if several():
        _start_watch()


def _wait_for(coordinator: str, timeout: float) -> None:
    """Wait until something listens at ``coordinator`` (host:port), or raise a DistributedError naming it after
    ``timeout`` seconds: JAX itself would abort the process with pages of log."""
    import socket
    import time

    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator {coordinator}: give HOST:PORT, for example 10.0.0.1:12355")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                why = err.strerror or str(err)
                message = (f"could not reach the coordinator at {coordinator} within {timeout:g} s ({why}); check "
                           "that process 0 runs there and that its host and port can be reached from here "
                           "(--join-timeout to wait longer)")  # fmt: skip
                raise DistributedError(message) from None
            time.sleep(0.5)


def several() -> bool:
    """Whether this run spans more than one process."""
    import jax

    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this is process 0, the one that writes the run folder."""
    import jax

    return jax.process_index() == 0


def broadcast_text(text: str) -> str:
    """Process 0's ``text``, on every process (each must call this together)."""
    if not several():
        return text
    import numpy as np
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode(), np.uint8) if is_primary() else np.zeros(0, np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    padded = np.zeros(max(length, 1), np.uint8)
    padded[: len(data)] = data[:length]
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded))[:length]).decode()


def on_primary(action: Callable[[], T], error: type[JaxcnnError]) -> T | None:
    """``action()`` on process 0 only; every process then learns whether it failed, and each raises ``error``
    with process 0's message if so (so no process waits for one that has already given up). Returns the
    action's result on process 0, None on the others."""
    if not several():
        return action()
    result, failure, message = None, None, ""
    if is_primary():
        try:
            result = action()
        except Exception as err:  # any failure: the others must not wait for a process that gave up
            failure, message = err, f"process 0: {err}" if str(err) else f"process 0 failed: {type(err).__name__}"
    agreed = broadcast_text(message)
    if failure is not None:
        raise failure
    if agreed:
        raise error(agreed)
    return result


def barrier(name: str) -> None:
    """Wait here until every process has come here too."""
    if several():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


WATCH_KEY = "jaxcnn/peer-watch"
_watcher: list[Any] = []  # the watch process beside this one (jaxcnn.peer_watch), once started


def _start_watch() -> None:
    """Start this process's watcher (:mod:`jaxcnn.peer_watch`): process 0's is the hub, whose address the others
    read from JAX's key-value store."""
    import atexit
    import subprocess
    import sys

    import jax
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    client = state.client
    assert client is not None  # joined
    me, count = jax.process_index(), jax.process_count()
    from pathlib import Path

    watch = Path(__file__).with_name("peer_watch.py")  # run as a script: importing the package would load JAX
    command = [sys.executable, str(watch), str(os.getpid()), str(me), str(count)]
    if me == 0:
        watcher = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert watcher.stdout is not None
        port = watcher.stdout.readline().strip()
        host = (state.coordinator_address or "127.0.0.1").rpartition(":")[0] or "127.0.0.1"
        client.key_value_set(WATCH_KEY, f"{host}:{port}")
    else:
        address = client.blocking_key_value_get(WATCH_KEY, JOIN_TIMEOUT_SECONDS * 1000)
        watcher = subprocess.Popen([*command, address], stdin=subprocess.PIPE, text=True)
    _watcher.append(watcher)
    atexit.register(tell_watch, "done")


def tell_watch(word: str) -> bool:
    """Tell this process's watcher that it ends normally (``done``) or was interrupted (``interrupted``: the
    watchers then stop every other process of the run). Whether there was a watcher to tell."""
    told = bool(_watcher)
    while _watcher:
        watcher = _watcher.pop()
        try:
            watcher.stdin.write(f"{word}\n")
            watcher.stdin.close()
            watcher.wait(timeout=5)
        except Exception:  # a watcher already gone: nothing to tell
            pass
    return told
