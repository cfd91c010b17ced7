"""Test session setup, before JAX starts: several fake CPU devices, parsed
absl flags (absltest helpers read them), and a private msdr cache dir."""

import os
import tempfile

os.environ.setdefault('MSDR_CACHE_DIR', tempfile.mkdtemp(prefix='msdr-cache-'))

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

NUM_DEVICES = 4
jax.config.update('jax_num_cpu_devices', NUM_DEVICES)
jax.config.update('jax_platforms', 'cpu')
flags.FLAGS.mark_as_parsed()
