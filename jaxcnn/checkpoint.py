"""Checkpoints with orbax: one per epoch, keeping the latest and the best (by test accuracy).

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash
or a kill in the middle of a save leaves the previous checkpoints intact and loadable. The sha256
of every saved array is stored with the checkpoint (in orbax's metrics item, which is written in
the same atomic step) and checked on every restore, so damage from outside is an error, never a
silently changed weight. Checkpoints written before checksums were recorded load unverified.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxcnn.errors import JaxcnnError

BEST_METRIC = "test_accuracy"
CHECKSUMS = "sha256"
"""The metrics key under which each array's sha256 is saved, by its path in the state."""


class CheckpointError(JaxcnnError):
    """A checkpoint that cannot be written or read; the message names the folder and what to do."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files or arrays no longer match what was saved."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


def array_checksums(tree: Any) -> dict[str, str]:
    """sha256 of each array of ``tree`` (its dtype, shape and bytes), keyed by the array's path."""
    sums = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(_value_here(leaf))
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
        sums[jax.tree_util.keystr(path)] = digest.hexdigest()
    return sums


def _value_here(leaf: Any) -> np.ndarray:
    """A leaf's whole value in this process: an array replicated over several processes' devices from this
    process's own copy (every process then computes the same checksums without talking to the others)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jaxcnn.parallel import fetch

        return np.asarray(fetch(leaf))
    return np.asarray(leaf)


def _here(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    """An array to restore whole onto this process's first device, whatever devices saved it: a run trained
    on 4 devices, or by several processes, is read back anywhere (orbax would otherwise insist on the saving
    topology)."""
    return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


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
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_handlers=ocp.StandardCheckpointHandler())  # fmt: skip

    @contextlib.contextmanager
    def _reading(self, what: str, epoch: int | None = None) -> Iterator[None]:
        """Turn orbax's and tensorstore's many errors on damaged files into one CheckpointError."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:
            message = (
                f"{self.directory}: {what} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is "
                "damaged or incomplete. Checkpoints are written whole or not at all, so this is damage from "
                "outside jaxcnn: restore the folder from a copy, or train again"
            )
            raise (CheckpointError(message) if epoch is None else DamagedCheckpointError(message, epoch)) from None

    def save(self, epoch: int, state: Any, metrics: dict[str, float]) -> None:
        """Save ``state`` (any pytree) as ``epoch``, with the metrics that decide the best one."""
        try:
            recorded = {**metrics, CHECKSUMS: array_checksums(state)}
            self._manager.save(epoch, args=ocp.args.StandardSave(state), metrics=recorded)
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
        """Restore ``epoch`` into the structure of ``like`` (arrays or ShapeDtypeStructs), as NumPy arrays."""
        abstract = jax.tree_util.tree_map(lambda a: _here(a.shape, a.dtype), like)
        return jax.tree_util.tree_map(np.asarray, self._restore(epoch, ocp.args.StandardRestore(abstract)))

    def _restore(self, epoch: int, args: Any, part: str | tuple[str, ...] = "") -> Any:
        """Restore and verify ``epoch``; ``part`` (key path prefixes such as "['params']") limits the check."""
        with self._reading(f"the checkpoint of epoch {epoch} ({epoch}/)", epoch):
            restored = self._manager.restore(epoch, args=args)
            recorded = (self._manager.metrics(epoch) or {}).get(CHECKSUMS)
        if recorded is not None:
            self._verify(epoch, restored, recorded, part)
        return restored

    def _verify(self, epoch: int, restored: Any, recorded: dict[str, str], part: str | tuple[str, ...]) -> None:
        actual = {k: v for k, v in array_checksums(restored).items() if k.startswith(part)}
        expected = {k: v for k, v in recorded.items() if k.startswith(part)}
        changed = sorted(key for key in expected.keys() | actual.keys() if expected.get(key) != actual.get(key))
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise DamagedCheckpointError(
                f"{self.directory / str(epoch)}: the checkpoint of epoch {epoch} is damaged: {shown} no longer "
                "match the sha256 saved with them. Restore the folder from a copy, load the other checkpoint "
                "(--which best or latest), or resume the run, which falls back to the newest intact epoch",
                epoch,
            )

    def restore_params(self, epoch: int) -> tuple[Any, Any]:
        """The ``params`` and the network's state (``{}`` when it has none) of ``epoch``, without the
        optimizer's state, as NumPy arrays."""
        # Restored without a target, optax's named tuples come back as plain containers with other
        # key paths, so only the parameters and state (plain dicts) are compared with their checksums.
        with self._reading(f"the checkpoint of epoch {epoch} ({epoch}/)", epoch):
            saved = self._manager.item_metadata(epoch)
        abstract = jax.tree_util.tree_map(lambda m: _here(m.shape, m.dtype), saved)
        restored = self._restore(epoch, ocp.args.StandardRestore(abstract), part=("['params']", "['model_state']"))
        params, state = restored["params"], restored.get("model_state", {})
        return jax.tree_util.tree_map(np.asarray, params), jax.tree_util.tree_map(np.asarray, state)

    def set_aside(self, epoch: int, folder: Path) -> Path:
        """Move one epoch's checkpoint (a damaged one) into ``folder``, out of orbax's sight; returns where."""
        target = folder / f"{epoch}-{datetime.datetime.now():%Y%m%dT%H%M%S}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(epoch)), str(target))
        self._manager.reload()
        return target

    def close(self) -> None:
        self._manager.close()
