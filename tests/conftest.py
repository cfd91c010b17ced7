"""Test session setup, before JAX starts: several fake CPU devices, parsed
absl flags (absltest helpers read them), a private msdr cache dir, and a
session-wide persistent XLA compilation cache (also used by the CLI
subprocesses), so a train step compiled by one test is reused by the next.
XLA's CPU compile of the stage-1 step takes ~10 s; its run at smoke size
takes milliseconds."""

import os
import tempfile

os.environ.setdefault('MSDR_CACHE_DIR', tempfile.mkdtemp(prefix='msdr-cache-'))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='msdr-xla-cache-'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

NUM_DEVICES = 4
jax.config.update('jax_num_cpu_devices', NUM_DEVICES)
jax.config.update('jax_platforms', 'cpu')
flags.FLAGS.mark_as_parsed()
