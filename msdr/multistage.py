"""The composed multi-stage model of one trained run.

  import msdr
  m = msdr.load(workdir)              # stage 1 + stage 2 from the checkpoints
  c = m.encode(x)                     # stage-1 posterior mean of the factors
  x1 = m.reconstruct_stage1(x)        # y = sigmoid(g1(E[c|x]))
  x2 = m.reconstruct(x, key)          # p(x | y, z), z inferred from x - y
  s = m.sample(key, n, temperature=1.0)   # c ~ N(0, I), z ~ prior
  t = m.traverse(x, dim, values, key)     # c[dim] swept, z kept fixed

Images are float [B, H, W, C] in [0, 1] (H = 64, or stage 2's 128 for the
high-resolution variant; stage 1 always sees 64x64). Every method is a jitted
pure function of the restored parameters, which `MultiStage` holds; keys are
explicit (`key=None` where allowed means the deterministic choice: posterior
means). `MultiStage.from_parts` composes models and parameters that did not
come from a workdir.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msdr import sharding
from msdr.train import stage2 as stage2_job


@dataclasses.dataclass(frozen=True)
class MultiStage:
  """Stage 1 (frozen factors c) + stage 2 (detail z): pure functions."""
  stage1: Any
  params1: Any
  stage2: Any
  params2: Any
  image_size: int = stage2_job.STAGE1_SIZE
  config: Any = None
  step1: int | None = None  # the checkpoints' steps (for load())
  step2: int | None = None

  @classmethod
  def from_parts(cls, stage1, params1, stage2, params2,
                 image_size: int = stage2_job.STAGE1_SIZE) -> 'MultiStage':
    return cls(stage1, params1, stage2, params2, image_size)

  @property
  def latent_dim(self) -> int:
    return self.stage1.latent_dim

  # -- stage 1 -------------------------------------------------------------------

  def posterior(self, x) -> tuple[jax.Array, jax.Array]:
    """Stage 1's q(c | x): (mean, logvar), each [B, latent_dim]."""
    return self._posterior(self.params1, jnp.asarray(x, jnp.float32))

  @functools.cached_property
  def _posterior(self):
    return jax.jit(lambda p, x: self.stage1.encode(
        p, stage2_job.resize(x, stage2_job.STAGE1_SIZE)))

  def _y(self, params1, c: jax.Array) -> jax.Array:
    """y = sigmoid(g1(c)) at stage 2's image size (pure, traced)."""
    return stage2_job.resize(jax.nn.sigmoid(self.stage1.decode(params1, c)),
                             self.image_size)

  @functools.cached_property
  def _decode(self):
    return jax.jit(self._y)

  def encode(self, x) -> jax.Array:
    """The stage-1 posterior mean E[c | x], [B, latent_dim]."""
    return self.posterior(x)[0]

  def decode_stage1(self, c) -> jax.Array:
    """y = sigmoid(g1(c)) at stage 2's image size."""
    return self._decode(self.params1, jnp.asarray(c, jnp.float32))

  def reconstruct_stage1(self, x) -> jax.Array:
    """Stage 1's reconstruction, y from the posterior mean of c."""
    return self.decode_stage1(self.encode(x))

  # -- stage 2 -------------------------------------------------------------------

  @functools.cached_property
  def _reconstruct(self):
    def fn(p2, x, y, key):
      return self.stage2.reconstruct(p2, x, y, key)
    return jax.jit(fn)

  @functools.cached_property
  def _infer(self):
    return jax.jit(lambda p2, x, y, key: self.stage2.infer(p2, x, y, key))

  @functools.cached_property
  def _generate(self):
    return jax.jit(lambda p1, p2, c, z: self.stage2.generate(
        p2, self._y(p1, c), z))

  @functools.cached_property
  def _sample(self):
    def fn(p1, p2, key, n, temperature):
      k_c, k_z = jax.random.split(key)
      c = jax.random.normal(k_c, (n, self.latent_dim))
      y = self._y(p1, c)
      z = self.stage2.sample_latent(k_z, n, temperature)
      return y, self.stage2.generate(p2, y, z)
    return jax.jit(fn, static_argnums=(3, 4))

  @functools.cached_property
  def _traverse(self):
    """(p1, p2, c, z, dim, values) -> [V, B, H, W, C]; p2 = z = None for
    stage 1's own traversal. dim is traced: one compilation for all."""
    def fn(p1, p2, c, z, dim, values):
      swept = _sweep(c, dim, values)                       # [V, B, K]
      images = self._y(p1, swept.reshape(-1, c.shape[1]))
      if p2 is not None:
        v = values.shape[0]
        repeat = lambda t: jnp.tile(t, (v,) + (1,) * (t.ndim - 1))
        images = self.stage2.generate(p2, images, jax.tree.map(repeat, z))
      return images.reshape(swept.shape[:2] + images.shape[1:])
    return jax.jit(fn)

  def infer(self, x, y=None, key: jax.Array | None = None):
    """z of x given y (default y: the stage-1 reconstruction of x)."""
    x = jnp.asarray(x, jnp.float32)
    y = self.reconstruct_stage1(x) if y is None else y
    return self._infer(self.params2, x, y, key)

  def generate(self, c, z) -> jax.Array:
    """The stage-2 image for factors c and detail z."""
    return self._generate(self.params1, self.params2,
                          jnp.asarray(c, jnp.float32), z)

  def reconstruct(self, x, key: jax.Array | None = None) -> jax.Array:
    """The multi-stage reconstruction: y from E[c|x], then stage 2 given y
    with z inferred from x (its posterior mean when key is None)."""
    x = jnp.asarray(x, jnp.float32)
    return self.reconstruct_given(x, self.reconstruct_stage1(x), key)

  def reconstruct_given(self, x, y, key: jax.Array | None = None
                        ) -> jax.Array:
    """Stage 2's reconstruction of x given an already computed y."""
    return self._reconstruct(self.params2, jnp.asarray(x, jnp.float32), y, key)

  def sample(self, key: jax.Array, n: int,
             temperature: float = 1.0) -> jax.Array:
    """n images: c ~ N(0, I) (stage 1's prior), then z from stage 2's prior
    at `temperature`."""
    return self.sample_both(key, n, temperature)[1]

  def sample_both(self, key: jax.Array, n: int, temperature: float = 1.0
                  ) -> tuple[jax.Array, jax.Array]:
    """(y, x) of `sample`: for each c ~ N(0, I), stage 1's image y =
    sigmoid(g1(c)) and the multi-stage sample x built on that y."""
    return self._sample(self.params1, self.params2, key, int(n),
                        float(temperature))

  def sample_stage1(self, key: jax.Array, n: int) -> jax.Array:
    """Stage 1's own samples, sigmoid(g1(c)) with c ~ N(0, I)."""
    return self.decode_stage1(jax.random.normal(key, (n, self.latent_dim)))

  def _check_dim(self, dim: int) -> None:
    if not 0 <= dim < self.latent_dim:
      from msdr.errors import UserInputError  # pylint: disable=g-import-not-at-top
      raise UserInputError(f'dim must be in [0, {self.latent_dim}); got {dim}')

  def traverse(self, x, dim: int, values, key: jax.Array | None = None
               ) -> jax.Array:
    """Images with c[dim] set to each of `values`, z fixed to x's.

    Returns:
      [len(values), B, H, W, C]: row v holds every image of x with its
      factor `dim` replaced by values[v]; z is inferred once from x (with
      `key`, or its posterior mean) and reused for every value.
    """
    self._check_dim(dim)
    x = jnp.asarray(x, jnp.float32)
    c = self.encode(x)
    z = self.infer(x, self.decode_stage1(c), key)
    return self._traverse(self.params1, self.params2, c, z, dim,
                          _values(values))

  def traverse_stage1(self, x, dim: int, values) -> jax.Array:
    """Stage 1's traversal: [len(values), B, H, W, C]."""
    self._check_dim(dim)
    return self._traverse(self.params1, None, self.encode(x), None, dim,
                          _values(values))


def _values(values) -> jax.Array:
  return jnp.asarray(np.asarray(values, np.float32).reshape(-1))


def _sweep(c: jax.Array, dim, values: jax.Array) -> jax.Array:
  """[V, B, K] copies of codes c [B, K] with column `dim` set to values[v]."""
  swept = jnp.broadcast_to(c, (values.shape[0],) + c.shape)
  return swept.at[:, :, dim].set(values[:, None])


def load(workdir: str, config=None) -> MultiStage:
  """Restores the model of a trained workdir.

  Args:
    workdir: a run trained by `python -m msdr.main`: stage 1 from the same
      workdir or its `stage1.init_from`, and stage 2 when its config has one.
      A stage-1-only run gives a `MultiStage` whose `stage2` is None (its
      stage-1 methods work; the stage-2 ones do not).
    config: the run's config (default: its config.json).

  Raises:
    UserInputError: not a run, or a stage without a checkpoint.
  """
  from msdr.train import run  # pylint: disable=g-import-not-at-top
  config = config if config is not None else run.load_config(workdir)
  mesh = sharding.make_mesh(1)
  stage1, params1, step1 = stage2_job.restore_stage1(config, workdir, mesh)
  if not stage2_job.has_stage2(config):
    return MultiStage(stage1, params1, None, None, config=config,
                      step1=int(step1))
  stage2, params2, step2 = stage2_job.restore_stage2(config, workdir, mesh)
  return MultiStage(stage1, params1, stage2, params2,
                    stage2_job.image_size(config), config, int(step1),
                    int(step2))
