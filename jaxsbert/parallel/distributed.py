"""Multi-host start-up: ``jax.distributed.initialize`` from the config or the environment."""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger("jaxsbert")
_ENV = {"coordinator_address": "JAXSBERT_COORDINATOR", "num_processes": "JAXSBERT_NUM_PROCESSES",
        "process_id": "JAXSBERT_PROCESS_ID"}


def maybe_initialize(config: dict | None) -> bool:
    """Initialises the JAX distributed runtime when a coordinator is configured (config keys, or the
    JAXSBERT_COORDINATOR / JAXSBERT_NUM_PROCESSES / JAXSBERT_PROCESS_ID environment variables), or when
    ``config["auto"]`` is set (TPU pods and SLURM/Open MPI clusters detect everything themselves).
    On CPU, cross-process collectives use gloo. Returns True when running multi-process."""
    config = dict(config or {})
    kwargs = {}
    for key, env in _ENV.items():
        value = config.get(key) if config.get(key) is not None else os.environ.get(env)
        if value is not None:
            kwargs[key] = value if key == "coordinator_address" else int(value)
    if not kwargs and not config.get("auto"):
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    try:  # only affects the CPU backend
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # option renamed or unavailable: the default implementation is used
        pass
    jax.distributed.initialize(**kwargs)
    log.info("distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1
