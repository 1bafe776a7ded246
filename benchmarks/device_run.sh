#!/usr/bin/env bash
# The GPU machine's run of benchmarks/device.py (see its docstring), from a copy of the repository's working
# tree (nothing installed: `python -m benchmarks.device` imports jaxsbert from the tree):
#
#     OUT=/some/dir bash benchmarks/device_run.sh            # the full run, stopped after DEVICE_RUN_LIMIT_S
#     OUT=/some/dir bash benchmarks/device_run.sh --smoke    # any extra arguments go to benchmarks.device
#
# Writes $OUT/device.md (the table, rewritten after every measurement, so a stopped run leaves what it
# measured), $OUT/device.md.jsonl (raw results), $OUT/device.log (progress with timestamps, worker errors)
# and $OUT/env.txt (nvidia-smi, jax's devices, library versions).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device}"
LIMIT_S="${DEVICE_RUN_LIMIT_S:-470}"       # the whole run, under 8 minutes
mkdir -p "$OUT"

# jax and torch run in separate processes, one after the other: jax may take most of the GPU's memory
# (peak_bytes_in_use counts what the program uses, not this reservation)
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export JAXSBERT_COMPILATION_CACHE=0       # compile times of a fresh machine (the workers set it too)

{
  date -u
  nvidia-smi || true
  python -c "import jax; print('jax', jax.__version__, jax.devices())" || true
  python -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda[0-9]*-.*|flax|optax|orbax-checkpoint|torch|transformers|sentence-transformers|tokenizers|numpy|safetensors) ' || true
} > "$OUT/env.txt" 2>&1

timeout -k 10 "$LIMIT_S" python -m benchmarks.device --out "$OUT/device.md" --budget-s $((LIMIT_S - 70)) "$@" \
  2>&1 | tee "$OUT/device.log"
status=${PIPESTATUS[0]}
echo "benchmarks/device_run.sh: exit status $status (124: stopped at ${LIMIT_S} s)" | tee -a "$OUT/device.log"
exit "$status"
