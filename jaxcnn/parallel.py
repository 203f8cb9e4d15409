"""Data parallelism with ``jax.sharding``: a mesh over devices, the batch split along it.

Parameters, optimizer state and the (small) data sets are replicated on every device of the
mesh; inside the compiled step each device computes the gradient of its share of the batch
(``shard_map``) and the gradients are averaged with one all-reduce; evaluation batches are
constrained to be split along the mesh's ``data`` axis. One device is the same code with a
mesh of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn.errors import JaxcnnError


def fetch(tree: Any) -> Any:
    """Every array of ``tree`` as a NumPy array of its global value, on every process.

    With one process this is ``jax.device_get``; with several, arrays that span other processes'
    devices are gathered first (``process_allgather``), which every process must call together.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


class DeviceError(JaxcnnError, ValueError):
    """A device count or batch size that the machine's devices cannot serve."""


@dataclass(frozen=True)
class DataParallel:
    """A 1-D mesh named ``data`` over the chosen devices."""

    mesh: Mesh

    @classmethod
    def over(cls, devices: int = 0) -> DataParallel:
        """A mesh over the first ``devices`` devices (0: all of them) of ``jax.devices()``."""
        available = jax.devices()
        count = len(available) if devices == 0 else devices
        if not 1 <= count <= len(available):
            raise DeviceError(
                f"asked for {devices} devices, but JAX sees {len(available)} ({available[0].platform}); "
                "use --devices 0 for all of them"
            )
        return cls(Mesh(np.array(available[:count]), ("data",)))

    @property
    def size(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def devices(self) -> list[str]:
        return [str(d) for d in self.mesh.devices.flat]

    def check_divides(self, batch_size: int, what: str) -> None:
        if batch_size % self.size:
            raise DeviceError(
                f"{what} {batch_size} does not split evenly across {self.size} devices: "
                f"use a multiple of {self.size} (for example {batch_size // self.size * self.size or self.size})"
            )

    def replicate(self, tree: Any) -> Any:
        """Put every array of ``tree`` (NumPy or JAX) on every device of the mesh, as JAX arrays."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    @property
    def split_sharding(self) -> NamedSharding:
        """Arrays split along their first (batch) axis across the mesh."""
        return NamedSharding(self.mesh, PartitionSpec("data"))

    def replicated_shape(self, shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        """What :meth:`replicate` makes of an array of ``shape`` and ``dtype``: for compiling ahead of time a
        function that will be given such arrays."""
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(self.mesh, PartitionSpec()))

    def batch_shape(self, shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        """What :meth:`assemble_batch` makes of a batch of ``shape`` (the whole batch's): for compiling ahead of
        time."""
        if jax.process_count() == 1:
            return self.replicated_shape(shape, dtype)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.split_sharding)

    def assemble_batch(self, tree: Any) -> Any:
        """A training batch on the devices, from the part this process read: with one process, the whole
        batch, replicated; with several, each process's consecutive share (in process order), which becomes
        the shards of one batch split along the mesh, so no process reads or holds the others' images."""
        if jax.process_count() == 1:
            return self.replicate(tree)
        return jax.tree.map(lambda local: jax.make_array_from_process_local_data(self.split_sharding, local), tree)

    def local_gradients(
        self, sums_and_grads: Callable[..., tuple[Any, Any, Any]]
    ) -> Callable[..., tuple[Any, Any, Any]]:
        """``(params, state, x, labels, key) -> (sums, mean-loss gradient, new state)`` computed by each
        device on its share of the batch, the sums added and the gradients averaged across the mesh
        (equal shares, so the average is the whole batch's gradient). The same function for a mesh of one.

        Batch norm normalises each device's share with that share's statistics (as PyTorch's
        DistributedDataParallel does without SyncBatchNorm); the running statistics the devices
        update are then averaged, so the state stays the same on every device. Dropout folds the
        device's index into the key, so devices draw different masks.

        Written with ``shard_map``, not left to XLA's SPMD partitioner: the fast CPU layers slice
        the batch (weight gradients 16 images at a time), and the partitioner moved those slices
        between devices with collective permutes (16 in LeNet's step on 2 devices; none now, only
        the gradients' all-reduce).
        """
        if self.size == 1:
            return sums_and_grads

        def local(params: Any, state: Any, x: Any, labels: Any, key: Any) -> tuple[Any, Any, Any]:
            if key is not None:  # each device its own dropout masks
                key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            sums, grads, state = sums_and_grads(params, state, x, labels, key)
            return jax.lax.psum(sums, "data"), jax.lax.pmean(grads, "data"), jax.lax.pmean(state, "data")

        batch, whole = PartitionSpec("data"), PartitionSpec()
        # check_vma=False: with JAX's checks of varying values on, the gradient of the replicated
        # parameters comes back already summed over the devices (the transpose of broadcasting them is
        # a psum), and the pmean above would leave that sum: the mesh's size times the gradient.
        # Adam hardly notices a scaled gradient; SGD does (tests/test_parallel.py compares with SGD).
        return jax.shard_map(local, mesh=self.mesh, in_specs=(whole, whole, batch, batch, whole),
                             out_specs=(whole, whole, whole), check_vma=False)  # fmt: skip

    def split_batch(self) -> Callable[[Any], Any]:
        """Inside jit: constrain an array to be split along its first (batch) axis."""
        return lambda x: jax.lax.with_sharding_constraint(x, self.split_sharding)
