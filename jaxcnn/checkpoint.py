"""Checkpoints with orbax: one per epoch, keeping the latest and the best (by test accuracy).

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash
or a kill in the middle of a save leaves the previous checkpoints intact and loadable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = "test_accuracy"


class CheckpointError(Exception):
    """A checkpoint that cannot be written or read; the message names the folder and what to do."""


class Checkpoints:
    """The checkpoints of one run directory (``RUN/checkpoints/<epoch>``)."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=1),
                checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,
            best_fn=lambda m: m[BEST_METRIC],  # what best_step() ranks by
            best_mode="max",
            preservation_policy=policy,
            create=create,
        )
        self.directory = directory.absolute()
        with self._reading("the checkpoint folder"):
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turn orbax's and tensorstore's many errors on damaged files into one CheckpointError."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(
                f"{self.directory}: {what} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is "
                "damaged or incomplete. Checkpoints are written whole or not at all, so this is damage from "
                "outside jaxcnn: restore the folder from a copy, or train again"
            ) from None

    def save(self, epoch: int, state: Any, metrics: dict[str, float]) -> None:
        """Save ``state`` (any pytree) as ``epoch``, with the metrics that decide the best one."""
        try:
            self._manager.save(epoch, args=ocp.args.StandardSave(state), metrics=metrics)
            self._manager.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{self.directory}: could not save epoch {epoch} ({err}); earlier checkpoints are untouched. "
                "Free disk space or fix the folder's permissions, then resume"
            ) from None

    def latest_epoch(self) -> int | None:
        with self._reading("the list of checkpoints"):
            return self._manager.latest_step()

    def best_epoch(self) -> int | None:
        with self._reading("the checkpoints' metrics"):
            return self._manager.best_step()

    def epochs(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, epoch: int, like: Any) -> Any:
        """Restore ``epoch`` into the structure of ``like`` (arrays or ShapeDtypeStructs)."""
        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
        return self._restore(epoch, ocp.args.StandardRestore(abstract))

    def _restore(self, epoch: int, args: Any) -> Any:
        with self._reading(f"the checkpoint of epoch {epoch} ({epoch}/)"):
            return self._manager.restore(epoch, args=args)

    def restore_params(self, epoch: int) -> Any:
        """Only the ``params`` of ``epoch`` (no optimizer state needed), as NumPy arrays."""
        restored = self._restore(epoch, ocp.args.StandardRestore())
        return jax.tree_util.tree_map(np.asarray, restored["params"])

    def close(self) -> None:
        self._manager.close()
