"""The matmul-form convolutions and disentanglement_lib's encoder/decoder.

`msdr.models.networks` rewrites stride-2 convolutions (`conv_s2`) and 4x4
stride-2 transposed convolutions (`conv_transpose_s2`) as matrix products.
They are checked against two independent references:

* XLA's own convolutions (`lax.conv_general_dilated`, `lax.conv_transpose`,
  `flax.linen.Conv` / `ConvTranspose`), values and gradients;
* float64 NumPy convolutions written here tap by tap from their definitions
  (TF 'SAME' padding; the transposed convolution as a scatter
  out[o] += x[i] * W[t] with o = 2 i + 2 - t per axis, flax's kernel layout
  without a flip), which are first checked against XLA themselves.

The `Encoder` / `Decoder` are checked for disentanglement_lib's parameter
shapes, their initialisers (Glorot uniform kernels, zero biases), and a whole
float64 NumPy forward pass from the same parameters.
"""

import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msdr.models import networks

_DIMS = ('NHWC', 'HWIO', 'NHWC')
_LATENT = 10


# -- float64 NumPy references ------------------------------------------------


def _same_pads(size, k, stride=2):
  """TF 'SAME' padding (before, after) of one axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def np_conv_s2(x, w):
  """Stride-2 'SAME' cross-correlation, x [B, H, W, Ci], w [k, k, Ci, Co]."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  k = w.shape[0]
  b, h, wd, _ = x.shape
  ho, wo = -(-h // 2), -(-wd // 2)
  xp = np.pad(x, ((0, 0), _same_pads(h, k), _same_pads(wd, k), (0, 0)))
  out = np.zeros((b, ho, wo, w.shape[-1]))
  for ky in range(k):
    for kx in range(k):
      window = xp[:, ky:ky + 2 * ho - 1:2, kx:kx + 2 * wo - 1:2]
      out += np.einsum('bhwc,cd->bhwd', window, w[ky, kx])
  return out


def np_conv_s2_kernel_grad(x, w_shape, r):
  """d/dW of sum(r * np_conv_s2(x, W)): each tap meets its input window."""
  x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
  k = w_shape[0]
  _, h, wd, _ = x.shape
  ho, wo = r.shape[1:3]
  xp = np.pad(x, ((0, 0), _same_pads(h, k), _same_pads(wd, k), (0, 0)))
  grad = np.zeros(w_shape)
  for ky in range(k):
    for kx in range(k):
      window = xp[:, ky:ky + 2 * ho - 1:2, kx:kx + 2 * wo - 1:2]
      grad[ky, kx] = np.einsum('bhwc,bhwd->cd', window, r)
  return grad


def np_conv_transpose_s2(x, w):
  """4x4 stride-2 'SAME' transposed convolution, flax layout (no flip).

  Per axis, input pixel i reaches output pixel o = 2 i + 2 - t through tap t
  (t = 0..3); outputs outside [0, 2H) are cropped.
  """
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  b, h, wd, _ = x.shape
  # full[:, o + 1] for o in [-1, 2H]: every tap lands inside.
  full = np.zeros((b, 2 * h + 2, 2 * wd + 2, w.shape[-1]))
  for ty in range(4):
    for tx in range(4):
      contrib = np.einsum('bhwc,cd->bhwd', x, w[ty, tx])
      full[:, 3 - ty:3 - ty + 2 * h - 1:2,
           3 - tx:3 - tx + 2 * wd - 1:2] += contrib
  return full[:, 1:2 * h + 1, 1:2 * wd + 1]


def _relu(a):
  return np.maximum(a, 0.0)


def np_encoder(params, x):
  """float64 forward pass of disentanglement_lib's encoder."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = np.asarray(x, np.float64)
  for i in range(4):
    layer = p[f'ConvS2_{i}']
    h = _relu(np_conv_s2(h, layer['kernel']) + layer['bias'])
  h = h.reshape(h.shape[0], -1)
  h = _relu(h @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
  mean = h @ p['mean']['kernel'] + p['mean']['bias']
  logvar = h @ p['logvar']['kernel'] + p['logvar']['bias']
  return mean, logvar


def np_decoder(params, c):
  """float64 forward pass of disentanglement_lib's decoder."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = np.asarray(c, np.float64)
  h = _relu(h @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
  h = _relu(h @ p['Dense_1']['kernel'] + p['Dense_1']['bias'])
  h = h.reshape(h.shape[0], 4, 4, 64)
  for i in range(4):
    layer = p[f'ConvTransposeS2_{i}']
    h = np_conv_transpose_s2(h, layer['kernel']) + layer['bias']
    if i < 3:
      h = _relu(h)
  return h


# -- helpers -----------------------------------------------------------------


def _rand(rng, shape, scale=1.0):
  return (scale * rng.normal(size=shape)).astype(np.float32)


def _assert_close(got, want, rtol=1e-4, err_msg=''):
  """allclose with an absolute floor relative to the reference's scale."""
  want = np.asarray(want, np.float64)
  atol = rtol * max(float(np.max(np.abs(want))), 1e-30)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol,
                             atol=atol, err_msg=err_msg)


def _xla_conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (2, 2), 'SAME',
                                      dimension_numbers=_DIMS)


def _xla_conv_transpose(x, k):
  return jax.lax.conv_transpose(x, k, (2, 2), 'SAME', dimension_numbers=_DIMS)


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _random_params(shapes, rng):
  """He-scaled random kernels and nonzero biases for a parameter tree."""
  def draw(shape):
    if len(shape) == 1:
      return _rand(rng, shape, 0.1)
    fan_in = int(np.prod(shape[:-1]))
    return _rand(rng, shape, math.sqrt(2.0 / fan_in))
  return jax.tree.map(draw, shapes, is_leaf=lambda s: isinstance(s, tuple))


def _fast_rng_compile():
  """Scoped non-partitionable threefry for init tests.

  The partitionable threefry takes seconds to compile per 4-D kernel shape on
  this CPU (~3 s each; ~10 s per network's init); the other variant draws
  from the same distributions, which is all the init tests look at.
  """
  return jax.threefry_partitionable(False)


# One jitted apply per (network, channels): compiles are the cost here.
_APPLY = {}


def _apply(kind, channels):
  if (kind, channels) not in _APPLY:
    module = (networks.Encoder(_LATENT) if kind == 'encoder'
              else networks.Decoder(channels))
    _APPLY[kind, channels] = jax.jit(
        lambda p, a: module.apply({'params': p}, a))
  return _APPLY[kind, channels]


# -- tests -------------------------------------------------------------------


class NumpyReferenceTest(parameterized.TestCase):
  """The NumPy references themselves agree with XLA (so they can judge)."""

  def test_conv_references_match_xla(self):
    rng = np.random.default_rng(0)
    x = _rand(rng, (2, 6, 4, 3))
    for k in (2, 4):
      w = _rand(rng, (k, k, 3, 5))
      _assert_close(_xla_conv(x, w), np_conv_s2(x, w), err_msg=f'k={k}')
    w = _rand(rng, (4, 4, 3, 5))
    _assert_close(_xla_conv_transpose(x, w), np_conv_transpose_s2(x, w))

  def test_transpose_reference_single_pixel(self):
    # One input pixel, one channel: output (oy, ox) holds tap
    # (2 + 0 - oy, 2 + 0 - ox) for oy, ox in {0, 1}: taps 2, 1 per axis.
    w = np.arange(16.0).reshape(4, 4, 1, 1)
    got = np_conv_transpose_s2(np.ones((1, 1, 1, 1)), w)[0, :, :, 0]
    np.testing.assert_array_equal(got, [[w[2, 2, 0, 0], w[2, 1, 0, 0]],
                                        [w[1, 2, 0, 0], w[1, 1, 0, 0]]])


class SpaceToDepthTest(absltest.TestCase):

  def test_matches_explicit_loop(self):
    rng = np.random.default_rng(1)
    x = _rand(rng, (2, 4, 6, 3))
    got = np.asarray(jax.jit(networks.space_to_depth)(x))
    self.assertEqual(got.shape, (2, 2, 3, 12))
    want = np.zeros((2, 2, 3, 12), np.float32)
    for i in range(2):
      for j in range(3):
        for r in range(2):
          for s in range(2):
            want[:, i, j, (2 * r + s) * 3:(2 * r + s + 1) * 3] = (
                x[:, 2 * i + r, 2 * j + s])
    np.testing.assert_array_equal(got, want)


# (name, kernel size, input shape, output channels): odd and even channel
# counts, non-square inputs, and a 2x2 input that yields one output pixel.
_CONV_CASES = (
    ('k2_even', 2, (2, 6, 10, 4), 6),
    ('k2_odd', 2, (2, 8, 4, 3), 5),
    ('k4_even', 4, (2, 6, 10, 2), 8),
    ('k4_odd', 4, (2, 4, 12, 1), 3),
    ('k4_one_pixel', 4, (1, 2, 2, 3), 1),
)


def _assert_same_grads(ours_fn, ref_fn, x, w, r):
  """Asserts equal gradients of sum(r * f(x, w)) for both functions and
  returns ours (d/dx, d/dw)."""
  def grads(a, k):
    return tuple(jax.grad(lambda a, k, f=f: jnp.sum(r * f(a, k)),
                          argnums=(0, 1))(a, k) for f in (ours_fn, ref_fn))

  (gx, gw), (rx, rw) = jax.jit(grads)(x, w)
  np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-5)
  return gx, gw


def _with_methods(cases, methods):
  """Each (name, ...) case once per method: (name_method, ..., method)."""
  return tuple((f'{case[0]}_{method}',) + case[1:] + (method,)
               for case in cases for method in methods)


# A 4x4 kernel runs each formulation; None picks by channel counts.
_CONV_METHOD_CASES = _with_methods(
    [c for c in _CONV_CASES if c[1] == 4], ('patches', 'shifted', None)) + (
        _with_methods([c for c in _CONV_CASES if c[1] == 2], (None,)))


class ConvS2Test(parameterized.TestCase):

  @parameterized.named_parameters(*_CONV_METHOD_CASES)
  def test_matches_xla_and_numpy(self, size, shape, c_out, method):
    rng = np.random.default_rng(2)
    x = _rand(rng, shape)
    w = _rand(rng, (size, size, shape[-1], c_out))
    got, ref = jax.jit(lambda a, k: (networks.conv_s2(a, k, method),
                                     _xla_conv(a, k)))(x, w)
    self.assertEqual(got.shape, (shape[0], shape[1] // 2, shape[2] // 2,
                                 c_out))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    _assert_close(got, np_conv_s2(x, w))

  @parameterized.named_parameters(*_CONV_METHOD_CASES)
  def test_gradients_match_xla(self, size, shape, c_out, method):
    rng = np.random.default_rng(3)
    x = _rand(rng, shape)
    w = _rand(rng, (size, size, shape[-1], c_out))
    r = _rand(rng, (shape[0], shape[1] // 2, shape[2] // 2, c_out))

    ours = lambda a, k: networks.conv_s2(a, k, method)
    _, gw = _assert_same_grads(ours, _xla_conv, x, w, r)
    _assert_close(gw, np_conv_s2_kernel_grad(x, w.shape, r))

  def test_default_method_moves_fewer_values(self):
    # 'shifted' when 4 C_in > C_out (the 32 -> 32 encoder layer), else
    # 'patches' (the 1 -> 32 image layer): read off the lowered program,
    # where only 'patches' concatenates 16 C_in patch channels.
    def concatenates_patches(c_in, c_out):
      x = jnp.zeros((1, 8, 8, c_in))
      hlo = jax.jit(networks.conv_s2).lower(
          x, jnp.zeros((4, 4, c_in, c_out))).as_text()
      return f'x{16 * c_in}xf32' in hlo
    self.assertFalse(concatenates_patches(32, 32))
    self.assertTrue(concatenates_patches(1, 32))

  def test_rejects_unknown_method(self):
    with self.assertRaisesRegex(
        ValueError,
        "method is None or one of 'shifted', 'patches', got 'im2col'"):
      networks.conv_s2(jnp.zeros((1, 4, 4, 2)), jnp.zeros((4, 4, 2, 3)),
                       'im2col')

  @parameterized.parameters(1, 3, 5)
  def test_rejects_other_kernel_sizes(self, size):
    x = jnp.zeros((1, 4, 4, 2))
    with self.assertRaisesRegex(ValueError,
                                f'2x2 or 4x4 kernels, got {size}x{size}'):
      networks.conv_s2(x, jnp.zeros((size, size, 2, 3)))


# (name, input shape, output channels).
_CONVT_CASES = (
    ('even', (2, 3, 5, 4), 6),
    ('odd', (2, 4, 2, 3), 5),
    ('one_channel', (1, 2, 3, 1), 1),
    ('one_pixel', (2, 1, 1, 2), 3),
)

class ConvTransposeS2Test(parameterized.TestCase):

  @parameterized.parameters(2, 3)
  def test_rejects_other_kernel_sizes(self, size):
    with self.assertRaisesRegex(ValueError, f'4x4 kernel, got {size}x{size}'):
      networks.conv_transpose_s2(jnp.zeros((1, 2, 2, 2)),
                                 jnp.zeros((size, size, 2, 3)))

  def test_rejects_unknown_method(self):
    with self.assertRaisesRegex(
        ValueError, "None or one of 'adjoint', 'taps', 'phases', got 'fft'"):
      networks.conv_transpose_s2(jnp.zeros((1, 2, 2, 2)),
                                 jnp.zeros((4, 4, 2, 3)), 'fft')

  @parameterized.named_parameters(*_with_methods(_CONVT_CASES,
                                                 ('adjoint', 'taps', 'phases',
                                                  None)))
  def test_matches_xla_flax_and_numpy(self, shape, c_out, method):
    rng = np.random.default_rng(4)
    x = _rand(rng, shape)
    w = _rand(rng, (4, 4, shape[-1], c_out))
    flax_layer = nn.ConvTranspose(c_out, (4, 4), (2, 2), 'SAME')
    flax_params = {'params': {'kernel': w, 'bias': np.zeros(c_out,
                                                            np.float32)}}
    got, ref, flax_out = jax.jit(lambda a, k: (
        networks.conv_transpose_s2(a, k, method), _xla_conv_transpose(a, k),
        flax_layer.apply(flax_params, a)))(x, w)
    self.assertEqual(got.shape, (shape[0], 2 * shape[1], 2 * shape[2], c_out))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, flax_out, rtol=1e-5, atol=1e-5)
    _assert_close(got, np_conv_transpose_s2(x, w))

  @parameterized.named_parameters(*_with_methods(_CONVT_CASES,
                                                 ('adjoint', 'taps', 'phases',
                                                  None)))
  def test_gradients_match_xla(self, shape, c_out, method):
    rng = np.random.default_rng(5)
    x = _rand(rng, shape)
    w = _rand(rng, (4, 4, shape[-1], c_out))
    r = _rand(rng, (shape[0], 2 * shape[1], 2 * shape[2], c_out))

    gx, gw = _assert_same_grads(
        lambda a, k: networks.conv_transpose_s2(a, k, method),
        _xla_conv_transpose, x, w, r)
    # The input gradient of a transposed convolution is the stride-2 'SAME'
    # convolution of r with the kernel flipped (W[3 - t] per axis) and its
    # channels swapped: dL/dx[i] = sum_o r[o] W[2 i + 2 - o].
    _assert_close(gx, np_conv_s2(r, np.swapaxes(w[::-1, ::-1], 2, 3)))


  # A NumPy kernel closed over by a jitted function (restored or hand-built
  # parameters) must work: the taps are static slices, not traced gathers.
  def test_numpy_kernel_closed_over_in_jit(self):
    rng = np.random.default_rng(8)
    w = _rand(rng, (4, 4, 2, 3))
    x = _rand(rng, (1, 2, 3, 2))
    got = jax.jit(lambda a: networks.conv_transpose_s2(a, w))(x)
    _assert_close(got, np_conv_transpose_s2(x, w))


class LayerModulesTest(parameterized.TestCase):
  """ConvS2 / ConvTransposeS2 are nn.Conv / nn.ConvTranspose, reordered."""

  @parameterized.parameters((5, 2), (8, 4), (3, 4))
  def test_conv_module_equals_nn_conv(self, features, size):
    rng = np.random.default_rng(6)
    x = _rand(rng, (2, 6, 4, 3))
    ours = networks.ConvS2(features, size)
    ref = nn.Conv(features, (size, size), (2, 2), 'SAME')
    ours_shapes = _shapes(jax.eval_shape(ours.init, jax.random.key(0), x))
    ref_shapes = _shapes(jax.eval_shape(ref.init, jax.random.key(0), x))
    self.assertEqual(ours_shapes, ref_shapes)
    self.assertEqual(ours_shapes, {'params': {
        'kernel': (size, size, 3, features), 'bias': (features,)}})
    params = {'params': {'kernel': _rand(rng, (size, size, 3, features)),
                         'bias': _rand(rng, (features,))}}
    got, want = jax.jit(lambda p, a: (ours.apply(p, a), ref.apply(p, a)))(
        params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_close(got, np_conv_s2(x, params['params']['kernel'])
                  + params['params']['bias'])

  # The image layer (4 C_out < C_in) runs the 'taps' form, the others the
  # 'adjoint' form; no XLA convolution on any platform.
  @parameterized.parameters((3, 16, 'taps'), (16, 4, 'adjoint'))
  def test_conv_transpose_module_equals_nn_conv_transpose(self, features,
                                                          c_in, method):
    rng = np.random.default_rng(7)
    x = _rand(rng, (2, 3, 5, c_in))
    ours = networks.ConvTransposeS2(features)
    ref = nn.ConvTranspose(features, (4, 4), (2, 2), 'SAME')
    ours_shapes = _shapes(jax.eval_shape(ours.init, jax.random.key(0), x))
    ref_shapes = _shapes(jax.eval_shape(ref.init, jax.random.key(0), x))
    self.assertEqual(ours_shapes, ref_shapes)
    params = {'params': {'kernel': _rand(rng, (4, 4, c_in, features)),
                         'bias': _rand(rng, (features,))}}
    r = _rand(rng, (2, 6, 10, features))

    def run(p, a):
      def f(module):
        return lambda p, a: jnp.sum(r * module.apply(p, a))
      return (ours.apply(p, a), ref.apply(p, a),
              jax.grad(f(ours), argnums=(0, 1))(p, a),
              jax.grad(f(ref), argnums=(0, 1))(p, a))

    got, want, got_grads, want_grads = jax.jit(run)(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_close(got, np_conv_transpose_s2(x, params['params']['kernel'])
                  + params['params']['bias'])
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5,
                                                         atol=1e-5),
                 got_grads, want_grads)
    hlo = jax.jit(ours.apply).lower(params, x).as_text()
    self.assertNotIn('convolution', hlo)
    # The forms round differently: the default is the expected one.
    np.testing.assert_array_equal(got, jax.jit(
        lambda p, a: networks.conv_transpose_s2(a, p['params']['kernel'],
                                                method)
        + p['params']['bias'])(params, x))

  def test_initialisers_are_glorot_uniform_and_zero(self):
    x = jnp.zeros((1, 8, 8, 16))
    for module, shape in ((networks.ConvS2(32, 4), (4, 4, 16, 32)),
                          (networks.ConvTransposeS2(24), (4, 4, 16, 24))):
      # See _fast_rng_compile: the distribution is what is checked.
      with _fast_rng_compile():
        params = jax.jit(module.init)(jax.random.key(1), x)['params']
      kernel = np.asarray(params['kernel'], np.float64)
      self.assertEqual(kernel.shape, shape)
      np.testing.assert_array_equal(params['bias'], 0.0)
      fan_in, fan_out = 16 * shape[2], 16 * shape[3]
      limit = math.sqrt(6.0 / (fan_in + fan_out))
      self.assertLessEqual(np.max(np.abs(kernel)), limit)
      # U(-limit, limit) has variance limit^2 / 3 (>= 8000 draws: ~2% noise).
      self.assertAlmostEqual(np.var(kernel) / (limit ** 2 / 3), 1.0, delta=0.1)


# disentanglement_lib's conv_encoder / deconv_decoder (64x64 images).
def _encoder_shapes(channels, latent):
  return {
      'ConvS2_0': {'kernel': (4, 4, channels, 32), 'bias': (32,)},
      'ConvS2_1': {'kernel': (4, 4, 32, 32), 'bias': (32,)},
      'ConvS2_2': {'kernel': (2, 2, 32, 64), 'bias': (64,)},
      'ConvS2_3': {'kernel': (2, 2, 64, 64), 'bias': (64,)},
      'Dense_0': {'kernel': (4 * 4 * 64, 256), 'bias': (256,)},
      'mean': {'kernel': (256, latent), 'bias': (latent,)},
      'logvar': {'kernel': (256, latent), 'bias': (latent,)},
  }


def _decoder_shapes(channels, latent):
  return {
      'Dense_0': {'kernel': (latent, 256), 'bias': (256,)},
      'Dense_1': {'kernel': (256, 1024), 'bias': (1024,)},
      'ConvTransposeS2_0': {'kernel': (4, 4, 64, 64), 'bias': (64,)},
      'ConvTransposeS2_1': {'kernel': (4, 4, 64, 32), 'bias': (32,)},
      'ConvTransposeS2_2': {'kernel': (4, 4, 32, 32), 'bias': (32,)},
      'ConvTransposeS2_3': {'kernel': (4, 4, 32, channels),
                            'bias': (channels,)},
  }


class EncoderDecoderTest(parameterized.TestCase):

  @parameterized.product(channels=(1, 3), latent=(10, 6))
  def test_parameter_shapes(self, channels, latent):
    x = jax.ShapeDtypeStruct((2, 64, 64, channels), jnp.float32)
    c = jax.ShapeDtypeStruct((2, latent), jnp.float32)
    key = jax.random.key(0)
    enc = jax.eval_shape(networks.Encoder(latent).init, key, x)
    dec = jax.eval_shape(networks.Decoder(channels).init, key, c)
    self.assertEqual(_shapes(enc['params']), _encoder_shapes(channels, latent))
    self.assertEqual(_shapes(dec['params']), _decoder_shapes(channels, latent))
    mean, logvar = jax.eval_shape(networks.Encoder(latent).apply, enc, x)
    self.assertEqual((mean.shape, logvar.shape), ((2, latent), (2, latent)))
    logits = jax.eval_shape(networks.Decoder(channels).apply, dec, c)
    self.assertEqual(logits.shape, (2, 64, 64, channels))

  @parameterized.parameters(1, 3)
  def test_encoder_matches_numpy(self, channels):
    rng = np.random.default_rng(10 + channels)
    params = _random_params(_encoder_shapes(channels, _LATENT), rng)
    x = rng.uniform(size=(2, 64, 64, channels)).astype(np.float32)
    mean, logvar = _apply('encoder', channels)(params, x)
    self.assertEqual(mean.shape, (2, _LATENT))
    self.assertEqual(logvar.shape, (2, _LATENT))
    want_mean, want_logvar = np_encoder(params, x)
    self.assertGreater(np.std(want_mean), 0.1)  # not a degenerate check
    _assert_close(mean, want_mean, err_msg='mean')
    _assert_close(logvar, want_logvar, err_msg='logvar')

  @parameterized.parameters(1, 3)
  def test_decoder_matches_numpy(self, channels):
    rng = np.random.default_rng(20 + channels)
    params = _random_params(_decoder_shapes(channels, _LATENT), rng)
    c = _rand(rng, (2, _LATENT))
    logits = _apply('decoder', channels)(params, c)
    self.assertEqual(logits.shape, (2, 64, 64, channels))
    want = np_decoder(params, c)
    self.assertGreater(np.std(want), 0.03)  # not a degenerate check
    _assert_close(logits, want)

  def test_init_is_glorot_uniform_with_zero_biases(self):
    key = jax.random.key(2)
    with _fast_rng_compile():
      enc = jax.jit(networks.Encoder(_LATENT).init)(
          key, jnp.zeros((1, 64, 64, 3)))['params']
      dec = jax.jit(networks.Decoder(3).init)(
          key, jnp.zeros((1, _LATENT)))['params']
    for tree in (enc, dec):
      for name, layer in tree.items():
        np.testing.assert_array_equal(layer['bias'], 0.0, err_msg=name)
        kernel = np.asarray(layer['kernel'], np.float64)
        receptive = int(np.prod(kernel.shape[:-2]))
        fan_in = receptive * kernel.shape[-2]
        fan_out = receptive * kernel.shape[-1]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        self.assertLessEqual(np.max(np.abs(kernel)), limit, msg=name)
        if kernel.size >= 2000:
          self.assertAlmostEqual(np.var(kernel) / (limit ** 2 / 3), 1.0,
                                 delta=0.15, msg=name)

  def test_forward_and_gradient_lower_without_convolutions(self):
    # The point of the matmul forms: no strided/transposed convolution in the
    # encoder, in the wide decoder layers, or in their gradients (the 3-channel
    # image layer uses XLA's transposed convolution on the CPU by design).
    x = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
    enc = networks.Encoder(_LATENT)
    dec = networks.Decoder(8)  # >= 8 features: sub-pixel everywhere
    key = jax.random.key(0)
    pe = jax.eval_shape(enc.init, key, x)
    c = jax.ShapeDtypeStruct((2, _LATENT), jnp.float32)
    pd = jax.eval_shape(dec.init, key, c)

    def loss(pe, pd, x):
      mean, _ = enc.apply(pe, x)
      return jnp.sum(dec.apply(pd, mean))

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(pe, pd, x).as_text()
    self.assertNotIn('convolution', hlo)


if __name__ == '__main__':
  absltest.main()
