#!/usr/bin/env bash
# The GPU rows of the README's train, layer and data benchmarks, in one command for a
# lent accelerator (4.8 minutes on the 2-core CPU; about 6.5 on one H200, most of
# it torch.compile's ~30 s compile per batch size and XLA's ~10 s per JAX row;
# needs JAX, Flax, Optax and, for the side-by-side rows, PyTorch; not
# ml-collections or tensorflow-datasets). `benchmarks/forms.py` (the step per
# layer formulation) adds about 3 minutes there. Run from the repository root:
#   bash benchmarks/gpu.sh [OUT_DIR]    (default: $OUT, else benchmarks/results)
set -euo pipefail
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L || true
python -c 'import jax; print(jax.devices())'
platform="$(python -c 'import jax; print(jax.devices()[0].platform)')"
python benchmarks/train.py --seconds=5 --out="$out/train-$platform.json"
python benchmarks/layers.py --out="$out/layers-$platform.json"
python benchmarks/data.py --seconds=2 --out="$out/data-$platform.json"
