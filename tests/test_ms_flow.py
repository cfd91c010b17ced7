"""The conditional multi-scale flow (`msdr.models.ms_flow`).

References are float64 NumPy written here from the formulas, or JAX's own
autodiff, never the code's output fed back to itself:

* the bijection: inverse(forward(x)) = x and forward(inverse(z)) = z with
  random (non-identity) parameters, and inverse log-det = -forward log-det,
  with and without actnorm / 1x1 convs;
* the log-dets of the whole map x -> z (pre-transform, actnorm, 1x1 convs,
  couplings) and of its inverse against log|det| of their brute-force
  Jacobians (`jax.jacfwd` in float64, `np.linalg.slogdet`);
* the identity start: at init z is the NumPy pre-transform of x laid out by
  a loop-written squeeze / factor-out, and log p(x | y) is the per-pixel
  closed form log N(v(x)) + log v'(x);
* the loss: dequantisation noise and bits/dim recomputed in NumPy from z and
  the log-det (Gaussian base) for the same key;
* sampling (temperature 0, temperature scaling), reconstruction, config
  errors, and a few Adam steps that lower the loss.

Shapes are tiny (4x4x1 and 8x8x3, two levels of two steps) and every flow
is jitted once per model and method: run op by op, a flow dispatches
hundreds of small ops, each compiled on its own, which takes far longer.
"""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from msdr.errors import UserInputError
from msdr.models import flow_layers
from msdr.models import ms_flow
from msdr.models import stage2

_BATCH = 3
# Besides the test config (4x4x1, 2 levels of 2 steps, 8 bits, actnorm and
# 1x1 convs), 8x8x3 runs with 5 bits and couplings alone.
_OTHER = dict(flow_num_bits=5, flow_actnorm=False, flow_invconv=False)


def _f64(a):
  return np.asarray(a, np.float64)


def _config(**overrides):
  cfg = dict(stage2.SHARED_DEFAULTS, **ms_flow.DEFAULTS)
  cfg.update(model='ms_flow', flow_levels=2, flow_steps_per_level=2,
             flow_hidden=8)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def _model(shape=(4, 4, 1), **overrides):
  return ms_flow.from_config(_config(**overrides), shape)


@functools.lru_cache(maxsize=None)
def _init(shape=(4, 4, 1), **overrides):
  model = _model(shape, **overrides)
  return jax.jit(model.init, static_argnums=1)(jax.random.key(0), shape)


@functools.lru_cache(maxsize=None)
def _random_params(shape=(4, 4, 1), seed=0, **overrides):
  """A tree of `init`'s shapes, far from the identity start: kernels
  N(0, 1 / fan_in), everything else N(0, 0.1^2)."""
  model = _model(shape, **overrides)
  shapes = jax.eval_shape(lambda k: model.init(k, shape), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def draw(s):
    std = 1 / math.sqrt(math.prod(s.shape[:-1])) if len(s.shape) == 4 else 0.1
    return (std * rng.normal(size=s.shape)).astype(np.float32)

  return jax.tree.map(draw, shapes)


@functools.lru_cache(maxsize=None)
def _jit(model, method):
  """model.method, jitted once per (hashable) model: a flow run op by op
  dispatches hundreds of small ops, each slower than the whole compile."""
  return jax.jit(getattr(model, method))


def _forward(model, params, x, y):
  return _jit(model, 'forward_and_log_det')(params, x, y)


def _inverse(model, params, z, y):
  return _jit(model, 'inverse_and_log_det')(params, z, y)


def _images(shape, seed, n=_BATCH):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, size=(n,) + shape) / 255.0
  y = rng.uniform(size=(n,) + shape)
  return x.astype(np.float32), y.astype(np.float32)


# -- float64 NumPy references --------------------------------------------------


def np_pre_transform(x, num_bits=8, alpha=0.05):
  """v = logit(s), s = alpha + (1 - 2 alpha) (x (n - 1) + 1/2) / n, and
  log dv/dx = log((1 - 2 alpha) (n - 1) / n) - log s - log(1 - s)."""
  x, n = _f64(x), 2.0 ** num_bits
  s = alpha + (1 - 2 * alpha) * (x * (n - 1) + 0.5) / n
  v = np.log(s / (1 - s))
  log_dv = np.log((1 - 2 * alpha) * (n - 1) / n) - np.log(s * (1 - s))
  return v, log_dv


def np_squeeze(x):
  """out[b, i, j, (2 r + s) C + c] = x[b, 2i + r, 2j + s, c], by loops."""
  b, h, w, c = x.shape
  out = np.zeros((b, h // 2, w // 2, 4 * c))
  for i in range(h // 2):
    for j in range(w // 2):
      for r in range(2):
        for s in range(2):
          out[:, i, j, (2 * r + s) * c:(2 * r + s + 1) * c] = (
              x[:, 2 * i + r, 2 * j + s])
  return out


def np_identity_latent(v, levels):
  """z of an identity flow: squeeze, factor out the second channel half at
  every level but the last, then the rest; each part flattened row-major."""
  parts = []
  for level in range(levels):
    v = np_squeeze(v)
    if level < levels - 1:
      half = v.shape[-1] // 2
      parts.append(v[..., half:].reshape(v.shape[0], -1))
      v = v[..., :half]
  parts.append(v.reshape(v.shape[0], -1))
  return np.concatenate(parts, axis=-1)


def np_log_normal(z):
  return np.sum(-0.5 * _f64(z) ** 2 - 0.5 * math.log(2 * math.pi), axis=-1)


# -- the bijection -------------------------------------------------------------


class BijectionTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(shape=(4, 4, 1)),
      dict(shape=(8, 8, 3), **_OTHER),
  )
  def test_inverse_of_forward(self, shape, **overrides):
    model = _model(shape, **overrides)
    params = _random_params(shape, 1, **overrides)
    x, y = _images(shape, 1)
    z, log_det = _forward(model, params, x, y)
    self.assertEqual(z.shape, (_BATCH, math.prod(shape)))
    self.assertEqual(log_det.shape, (_BATCH,))
    # Non-trivial: z is not just the pre-transformed x reordered.
    v, _ = np_pre_transform(x, model.num_bits)
    self.assertGreater(np.abs(_f64(z) - np_identity_latent(v, 2)).max(), 0.1)
    x_back, inv_log_det = _inverse(model, params, z, y)
    np.testing.assert_allclose(x_back, x, atol=2e-5)
    np.testing.assert_allclose(inv_log_det, -_f64(log_det), rtol=1e-5,
                               atol=1e-3)
    # And the other way round, from latents near those of real images (far
    # out, float32's sigmoid rounds to 1 and the logit back is infinite).
    x2, _ = _images(shape, 2)
    z2, _ = _forward(model, params, x2, y)
    z2 = z2 + 0.1 * np.random.default_rng(2).normal(size=z2.shape)
    x2, inv_log_det = _inverse(model, params, z2, y)
    z_back, log_det = _forward(model, params, x2, y)
    np.testing.assert_allclose(z_back, z2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, -_f64(log_det), rtol=1e-5,
                               atol=1e-3)

  def test_log_det_against_jacobian(self):
    shape = (4, 4, 1)
    model, params = _model(shape), _random_params(shape, 3)
    x, y = _images(shape, 3, n=1)

    def to_z(flat, params, y):
      z, log_det = model.forward_and_log_det(params, flat.reshape(x.shape), y)
      return z[0], (z, log_det[0])

    def to_x(flat, params, y):
      x, log_det = model.inverse_and_log_det(params, flat[None], y)
      return x.reshape(-1), log_det[0]

    with jax.enable_x64(True):
      params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      y = jnp.asarray(y, jnp.float64)
      jacobian, (z, log_det) = jax.jit(jax.jacfwd(to_z, has_aux=True))(
          jnp.asarray(x, jnp.float64).reshape(-1), params, y)
      self.assertEqual(z.dtype, jnp.float64)
      inv_jacobian, inv_log_det = jax.jit(jax.jacfwd(to_x, has_aux=True))(
          z[0], params, y)
    sign, want = np.linalg.slogdet(np.asarray(jacobian))
    self.assertNotEqual(sign, 0)
    np.testing.assert_allclose(float(log_det), want, rtol=1e-9)
    _, want_inv = np.linalg.slogdet(np.asarray(inv_jacobian))
    np.testing.assert_allclose(float(inv_log_det), want_inv, rtol=1e-9)
    np.testing.assert_allclose(want_inv, -want, rtol=1e-9)

  def test_identity_at_init(self):
    shape = (4, 4, 1)
    model, params = _model(shape), _init(shape)
    x, y = _images(shape, 4)
    z, log_det = _forward(model, params, x, y)
    v, log_dv = np_pre_transform(x)
    np.testing.assert_allclose(z, np_identity_latent(v, 2), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(log_det, log_dv.reshape(_BATCH, -1).sum(-1),
                               rtol=1e-5)
    # p(x | y) factorises over pixels, N(v(x)) v'(x), whatever y is.
    want = (-0.5 * v ** 2 - 0.5 * math.log(2 * math.pi) + log_dv).reshape(
        _BATCH, -1).sum(-1)
    log_likelihood = _jit(model, 'log_likelihood')
    np.testing.assert_allclose(log_likelihood(params, x, y), want, rtol=1e-5)
    np.testing.assert_allclose(log_likelihood(params, x, 1 - y), want,
                               rtol=1e-5)

  def test_squeeze(self):
    x = np.random.default_rng(5).normal(size=(2, 4, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(flow_layers.squeeze(x), np_squeeze(x))
    np.testing.assert_array_equal(
        flow_layers.unsqueeze(flow_layers.squeeze(x)), x)


# -- the loss ------------------------------------------------------------------


class LossTest(parameterized.TestCase):

  def test_bits_per_dim(self):
    shape = (4, 4, 1)
    model, params = _model(shape), _random_params(shape, 7)
    num_bits = model.num_bits
    x, y = _images(shape, 7)
    key = jax.random.key(8)
    objective, terms = _jit(model, 'loss')(params, x, y, key, 0)
    # The loss's noise: one uniform draw from its key.
    m = 2 ** num_bits - 1
    noise = _f64(jax.random.uniform(key, x.shape))
    x_deq = (np.round(_f64(x) * m) + noise - 0.5) / m
    np.testing.assert_allclose(
        flow_layers.dequantize(key, x, num_bits), x_deq, atol=1e-6)
    z, log_det = _forward(model, params, x_deq.astype(np.float32), y)
    dim = math.prod(shape)
    nll = -(np_log_normal(z) + _f64(log_det)) + dim * math.log(m)
    want = np.mean(nll) / (dim * math.log(2))
    np.testing.assert_allclose(float(objective), want, rtol=1e-5)
    np.testing.assert_allclose(float(terms['bits_per_dim']), want, rtol=1e-5)
    np.testing.assert_allclose(float(terms['nll']), np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(float(terms['log_det']),
                               np.mean(_f64(log_det)), rtol=1e-5)

  def test_dequantize(self):
    # 5 bits: x = k / 31 (as images are stored) plus noise over its bin.
    m = 31
    x = np.random.default_rng(14).integers(0, 32, size=(4, 5)) / m
    key = jax.random.key(15)
    got = _f64(flow_layers.dequantize(key, x.astype(np.float32), 5))
    want = x + (_f64(jax.random.uniform(key, x.shape)) - 0.5) / m
    np.testing.assert_allclose(got, want, atol=1e-6)
    self.assertTrue(np.all(np.abs(got - x) <= 0.5 / m + 1e-7))

  def test_adam_steps_lower_the_loss(self):
    shape = (4, 4, 1)
    model = _model(shape, learning_rate=3e-3)
    params = _init(shape)
    rng = np.random.default_rng(9)
    # Images close to their y: the flow can learn p(x | y).
    y = rng.uniform(size=(8,) + shape).astype(np.float32)
    x = np.clip(y + 0.05 * rng.normal(size=y.shape), 0, 1).astype(np.float32)
    opt = model.optimizer()
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
      (objective, _), grads = jax.value_and_grad(model.loss, has_aux=True)(
          params, x, y, key, 0)
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state, objective

    key = jax.random.key(10)
    objectives = []
    for i in range(20):
      params, state, objective = step(params, state, jax.random.fold_in(key, i))
      objectives.append(float(objective))
    self.assertTrue(np.all(np.isfinite(objectives)))
    self.assertLess(np.mean(objectives[-3:]), objectives[0] - 0.3)


# -- sampling ------------------------------------------------------------------


class SampleTest(absltest.TestCase):

  def test_temperature(self):
    shape = (4, 4, 1)
    model, params = _model(shape), _random_params(shape, 11)
    _, y = _images(shape, 11)
    key = jax.random.key(12)
    z1 = model.sample_latent(key, 5)
    self.assertEqual(z1.shape, (5, 16))
    np.testing.assert_allclose(model.sample_latent(key, 5, 0.7),
                               0.7 * _f64(z1), rtol=1e-6)
    np.testing.assert_array_equal(model.sample_latent(key, 5, 0.0),
                                  np.zeros((5, 16)))
    # sample = generate(y, z) = clip(inverse(z), 0, 1), z at the temperature.
    sample = _jit(model, 'sample')
    generate = lambda z: np.clip(_inverse(model, params, z, y)[0], 0, 1)
    cold = sample(params, y, key, 0.0)
    np.testing.assert_allclose(cold, generate(jnp.zeros((_BATCH, 16))),
                               atol=1e-6)
    warm = sample(params, y, key, 0.5)
    self.assertEqual(warm.shape, (_BATCH,) + shape)
    np.testing.assert_allclose(
        warm, generate(model.sample_latent(key, _BATCH, 0.5)), atol=1e-6)
    self.assertFalse(np.allclose(warm, cold, atol=1e-3))
    self.assertTrue(np.all((_f64(warm) >= 0) & (_f64(warm) <= 1)))

  def test_reconstruct(self):
    # infer is deterministic whatever the key; generate inverts it.
    shape = (4, 4, 1)
    model, params = _model(shape), _random_params(shape, 11)
    x, y = _images(shape, 13)
    z = _jit(model, 'infer')(params, x, y, jax.random.key(16))
    np.testing.assert_allclose(z, _forward(model, params, x, y)[0],
                               atol=1e-6)
    np.testing.assert_allclose(_jit(model, 'generate')(params, y, z), x,
                               atol=2e-5)


# -- config --------------------------------------------------------------------


class ConfigTest(parameterized.TestCase):

  def test_defaults(self):
    self.assertTrue(all(k.startswith('flow_') for k in ms_flow.DEFAULTS))
    cfg = ml_collections.ConfigDict(
        dict(stage2.SHARED_DEFAULTS, **ms_flow.DEFAULTS, model='ms_flow'))
    model = ms_flow.from_config(cfg, (64, 64, 3))
    self.assertEqual(model.name, 'ms_flow')
    self.assertIsNone(model.update)
    self.assertEqual((model.levels, model.steps, model.hidden,
                      model.num_bits), (3, 4, 64, 8))
    self.assertIs(stage2.module('ms_flow'), ms_flow)

  @parameterized.parameters(
      ('flow_levels', 0), ('flow_levels', 2.0), ('flow_levels', True),
      ('flow_steps_per_level', -1), ('flow_hidden', 0),
      ('flow_num_bits', 0), ('flow_num_bits', 17),
      ('flow_logit_alpha', 0.0), ('flow_logit_alpha', 0.5),
      ('flow_scale_bound', 0.0), ('flow_max_grad_norm', -1.0),
      ('flow_actnorm', 'yes'), ('flow_invconv', 1), ('learning_rate', 0.0))
  def test_bad_value(self, name, value):
    with self.assertRaisesRegex(UserInputError, f'stage2.{name}'):
      _model((8, 8, 1), **{name: value})

  def test_image_side_not_divisible(self):
    with self.assertRaisesRegex(UserInputError, r'divisible by 2\^3 = 8'):
      _model((12, 12, 1), flow_levels=3)
    with self.assertRaisesRegex(UserInputError, 'built for images'):
      _model((8, 8, 1)).init(jax.random.key(0), (16, 16, 1))


if __name__ == '__main__':
  absltest.main()
