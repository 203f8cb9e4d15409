"""What is checked before a run folder is written: an ``--out`` that may be replaced, a network that
tells the data set's classes apart, a ``--resume`` that has epochs left to train; and the run's lock,
held while it is written."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from jaxcnn.data import Dataset
from jaxcnn.distributed import on_primary
from jaxcnn.run_files import open_checkpoints, read_config
from jaxcnn.run_folder import RunError, RunLock, absolute, finish_interrupted_writes
from jaxcnn.spec import NetworkSpec
from jaxcnn.stream_data import StreamingData


class NothingToResumeError(RunError):
    """``--resume`` asked for no more epochs than the run already has: nothing was loaded or changed."""


def check_epochs_left(run_dir: Path, total: object) -> None:
    """Raise NothingToResumeError when the run's latest checkpoint already reaches ``total`` epochs; before
    the data is loaded or anything compiled."""
    if not isinstance(total, int) or total < 1 or not (run_dir / "checkpoints").is_dir():
        return  # the resume itself reports these
    from jaxcnn.checkpoint import DamagedCheckpointError

    checkpoints = open_checkpoints(run_dir, create=False)
    try:
        done = checkpoints.latest_epoch()
        if done is None or done < total:
            return
        checkpoints.restore_params(done)  # a damaged one is not done: resuming falls back and trains it again
    except DamagedCheckpointError:
        return
    finally:
        checkpoints.close()
    further = f"--epochs N with N above {done} trains further"
    if done == total:
        raise NothingToResumeError(f"{run_dir} already has its {done} epochs; nothing was done ({further})")
    raise NothingToResumeError(f"{run_dir} already has {done} epochs; --epochs {total} is the total to reach, not a "
                               f"number to add, so nothing was done ({further})")  # fmt: skip


@contextlib.contextmanager
def writing(run_dir: Path | None) -> Iterator[None]:
    """Hold ``run_dir``'s lock (nothing without a run directory) and finish what a killed writer left; in a run of
    several processes, process 0 holds it and the others stop with its error if it cannot."""
    if run_dir is None:
        yield
        return

    def take() -> RunLock:  # by process 0 alone when the run spans processes; the others learn if it failed
        lock = RunLock(run_dir).acquire()
        try:
            for note in finish_interrupted_writes(run_dir):
                print(f"note: {note}", file=sys.stderr, flush=True)
        except BaseException:
            lock.release()
            raise
        return lock

    lock = on_primary(take, RunError)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def check_out(run_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, an existing run without ``overwrite``, or, even with it, anything
    that is not a jaxcnn run (``--overwrite`` must never empty a folder of someone's files)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: is a file, not a folder; choose another --out for the run")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise RunError(
            f"{run_dir}: already exists and is not empty. Pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    try:
        read_config(run_dir)
    except RunError as err:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise RunError(
            f"{run_dir}: --overwrite replaces only a jaxcnn run, and this folder is not one ({err}); it holds "
            f"{shown}. Nothing was changed: choose another --out"
        ) from None
    here, target = absolute(Path.cwd()), absolute(run_dir)
    if here == target or target in here.parents:
        raise RunError(
            f"{run_dir}: --overwrite would replace the folder you are working in ({here}); "
            f"cd to another folder and give --out {target}"
        )


def check_classes(spec: NetworkSpec, data: Dataset | StreamingData) -> None:
    if spec.output_shape != (data.num_classes,):
        raise RunError(
            f"{spec.source}: the network ends in {'x'.join(map(str, spec.output_shape))} outputs but {data.name} has "
            f"{data.num_classes} classes; make the last layer a dense layer of {data.num_classes} units"
        )
