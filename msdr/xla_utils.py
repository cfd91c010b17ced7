"""Small helpers for steering XLA where its defaults cost real time."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp


# XLA compiler options for programs whose time is vectorised loops on a CPU:
# LLVM may use 512-bit vectors (XLA's default prefers 256). On this 2-core
# AVX-512 CPU, DCI's boosting program ran 4.5% faster with them in the median
# of eleven alternating pairs in one process (10 faster, ratios 0.937-0.973;
# one 1.018), with the same results; a CPU without AVX-512 keeps its own
# widest vectors, and other backends ignore CPU options.
CPU_VECTOR_OPTIONS = {'xla_cpu_prefer_vector_width': 512}


def known_options(options: dict) -> dict:
  """`options` if this JAX's XLA knows each of them, else {} (XLA rejects a
  program compiled with an option it does not know)."""
  return dict(options) if _knows(tuple(sorted(options.items()))) else {}


@functools.cache
def _knows(options: tuple) -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception as e:  # pylint: disable=broad-except
    if 'compile option' not in str(e):
      raise
    return False
  return True


def computed(fn, *args):
  """fn(*args), with its results computed once into buffers on the CPU.

  XLA's CPU backend fuses a producer into every consumer, so a per-pixel
  quantity used by three colour channels is computed three times, in a loop
  that it may fail to vectorise (measured: 13x slower for the textured
  shapes3d renderer). `lax.optimization_barrier` does not help there: it is
  expanded before fusion. A conditional's results are buffers, so on the CPU
  fn runs as the branch of a `lax.cond` that XLA cannot fold: its predicate
  is read from the data (always true) and its other branch differs. Results
  that fn computes are written straight into the branch's buffers; ones it
  passes through unchanged cost a copy. Other platforms fuse well and run fn
  as is.
  """
  def on_cpu(*values):
    first = jnp.ravel(values[0])[:1].astype(jnp.float32)
    always = jnp.all(jnp.isnan(first) | ~jnp.isnan(first))
    shapes = jax.eval_shape(fn, *values)
    return jax.lax.cond(
        always, fn, lambda *_: jax.tree.map(
            lambda x: jnp.zeros(x.shape, x.dtype), shapes), *values)
  return jax.lax.platform_dependent(*args, cpu=on_cpu, default=fn)


def materialize(*xs: jax.Array) -> tuple[jax.Array, ...]:
  """Returns `xs` unchanged, computed once into buffers on the CPU (see
  `computed`)."""
  return tuple(computed(lambda *v: v, *xs))


def cpu_cores() -> int:
  """Cores this process may run on (the CPU backend's concurrent programs)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1
