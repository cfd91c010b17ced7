#!/usr/bin/env bash
# Runs an msdr job on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/shapes3d_detail_beta_tcvae.py gs://bucket/run [overrides...]
#
# The repository must already be checked out (and `pip install -e .` done) in
# ~/msdr on every worker; `gcloud` must be configured for the project.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/msdr && python3 -m msdr.main --multihost --config $config --workdir $workdir$extra"
