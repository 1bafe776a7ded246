"""Device mesh and shardings: a ``data`` axis for the batch and an ``fsdp`` axis that shards parameters
and optimizer state (and also splits the batch). Everything is ``jax.jit`` with NamedSharding; XLA
inserts the collectives (an MNRL similarity matrix over the batch all-gathers the embeddings, with
gradients, so in-batch negatives are global)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: dict | None = None, devices: list | None = None) -> Mesh:
    """``{"data": -1, "fsdp": 1}``: -1 takes the remaining devices. The product must equal the device count."""
    cfg = dict(mesh_config or {"data": -1, "fsdp": 1})
    devices = devices if devices is not None else jax.devices()
    n = len(devices)
    sizes = {axis: int(cfg.get(axis, 1)) for axis in BATCH_AXES}
    unknown = [k for k in cfg if k not in BATCH_AXES]
    if unknown:
        raise ValueError(f"mesh axes {unknown} are not supported; supported: {list(BATCH_AXES)}")
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError("at most one mesh axis may be -1")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if n % fixed:
            raise ValueError(f"mesh {cfg}: {n} devices are not divisible by {fixed}")
        sizes[free[0]] = n // fixed
    if int(np.prod(list(sizes.values()))) != n:
        raise ValueError(f"mesh {sizes} needs {int(np.prod(list(sizes.values())))} devices, there are {n}")
    grid = np.asarray(devices).reshape([sizes[a] for a in BATCH_AXES])
    return Mesh(grid, BATCH_AXES)


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """The global batch is split over every device of the mesh: it must be a multiple of their number."""
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} (the global batch) is not a multiple of the {mesh.size} devices "
                         f"of the mesh {dict(mesh.shape)}; choose a multiple of {mesh.size}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, tree: Any, min_size: int = 2 ** 14) -> Any:
    """FSDP: each array of at least ``min_size`` elements is split along its largest dimension divisible
    by the ``fsdp`` axis size; the rest is replicated. With fsdp = 1 everything is replicated."""
    n = mesh.shape["fsdp"]

    def spec(x):
        shape = np.shape(x)
        if n == 1 or int(np.prod(shape or (1,))) < min_size:
            return replicated(mesh)
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % n == 0:
                parts = [None] * len(shape)
                parts[dim] = "fsdp"
                return NamedSharding(mesh, P(*parts))
        return replicated(mesh)

    return jax.tree_util.tree_map(spec, tree)


def sharded_call(fn: Any, mesh: Mesh, *args: Any) -> tuple[Any, Any]:
    """``fn(*args)`` computed straight into FSDP shardings: its result is laid out by :func:`param_sharding`
    of its shapes, and ``args`` go in laid out the same way, so no device ever holds the whole result (the
    train state's optimizer moments, say, which ``tx.init`` would otherwise create whole on the default
    device before they are sharded). Returns (result, its shardings)."""
    shardings = param_sharding(mesh, jax.eval_shape(fn, *args))
    args = jax.device_put(args, param_sharding(mesh, args))   # works for multi-process meshes too
    return jax.jit(fn, out_shardings=shardings)(*args), shardings


def bytes_per_device(tree: Any) -> dict:
    """{device: bytes of ``tree``'s arrays held there}: each jax.Array's addressable shards; an abstract
    array (``jax.ShapeDtypeStruct`` with a ``sharding``) counts the shards its sharding gives it."""
    totals: dict = {}
    for x in jax.tree_util.tree_leaves(tree):
        if isinstance(x, jax.Array):
            held = [(s.device, s.data.nbytes) for s in x.addressable_shards]
        else:
            shard = int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
            held = [(d, shard) for d in x.sharding.addressable_devices]
        for device, n in held:
            totals[device] = totals.get(device, 0) + n
    return totals


def global_batch(mesh: Mesh, local_batch: Any) -> Any:
    """Process-local rows (this host's contiguous slice of the global batch) -> global jax.Arrays."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local_batch, sharding)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                  local_batch)


def in_host_memory(x: Any) -> bool:
    """True for a host value or a jax.Array whose every shard is in this process's CPU memory: numpy can
    read it without a device transfer or a collective."""
    return not isinstance(x, jax.Array) or (x.is_fully_addressable and
                                            all(d.platform == "cpu" for d in x.sharding.device_set))


def local_copy(tree: Any) -> Any:
    """Full copies of (possibly sharded, multi-process) arrays on this process's first device, for
    process-local work (evaluation, export). An array sharded across processes is all-gathered, so when
    any is, every process must call this with the same tree, in the same order."""
    from jax.experimental import multihost_utils

    device = jax.local_devices()[0]

    def copy(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                x = x.addressable_data(0)
            else:
                x = multihost_utils.process_allgather(x, tiled=True)
        return jax.device_put(x, device)

    return jax.tree_util.tree_map(copy, tree)
