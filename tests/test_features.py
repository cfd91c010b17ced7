"""Feature networks for the Fréchet distance, against float64 NumPy
references written from the architectures' descriptions (torch layouts for
InceptionV3, so the weight transposes are checked too)."""

import hashlib
import os

from absl.testing import absltest
import numpy as np

from msdr.errors import UserInputError
from msdr.eval import features
from msdr.eval import inception
from msdr.eval import quality

_MASK = (1 << 64) - 1


def reference_splitmix64(seed, count):
  """The sequential generator, in Python integers."""
  state, out = seed, []
  for _ in range(count):
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    out.append(z ^ (z >> 31))
  return out


def reference_resize(x, size):
  """torch's F.interpolate(NCHW, size, 'bilinear', align_corners=False)."""
  def matrix(n_in):
    src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((size, n_in))
    np.add.at(m, (np.arange(size), i0), 1.0 - (src - i0))
    np.add.at(m, (np.arange(size), i1), src - i0)
    return m
  return np.einsum('oh,nchw,pw->ncop', matrix(x.shape[2]), x,
                   matrix(x.shape[3]))


def reference_conv(x, w, stride=1, padding=((0, 0), (0, 0))):
  """NCHW x, OIHW w, explicit padding, as torch.nn.functional.conv2d."""
  x = np.pad(x, ((0, 0), (0, 0)) + tuple(padding))
  _, _, kh, kw = w.shape
  ho = (x.shape[2] - kh) // stride + 1
  wo = (x.shape[3] - kw) // stride + 1
  xt = x.transpose(0, 2, 3, 1)
  out = 0.0
  for a in range(kh):
    for b in range(kw):
      patch = xt[:, a:a + stride * (ho - 1) + 1:stride,
                 b:b + stride * (wo - 1) + 1:stride]
      out = out + patch @ w[:, :, a, b].T
  return out.transpose(0, 3, 1, 2)


def reference_pool(x, stride, pad, kind):
  """3x3 pooling: 'max' (-inf padding) or 'avg' not counting the padding."""
  fill = -np.inf if kind == 'max' else 0.0
  p = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
             constant_values=fill)
  ones = np.pad(np.ones(x.shape[2:]), pad)
  ho = (p.shape[2] - 3) // stride + 1
  wo = (p.shape[3] - 3) // stride + 1
  windows = [p[:, :, a:a + stride * (ho - 1) + 1:stride,
               b:b + stride * (wo - 1) + 1:stride]
             for a in range(3) for b in range(3)]
  if kind == 'max':
    return np.max(windows, axis=0)
  counts = sum(ones[a:a + stride * (ho - 1) + 1:stride,
                    b:b + stride * (wo - 1) + 1:stride]
               for a in range(3) for b in range(3))
  return np.sum(windows, axis=0) / counts


def reference_inception_pool3(images, w):
  """pytorch-fid's InceptionV3(output_blocks=[3]) in NumPy: images NHWC in
  [0, 1] -> [N, 2048]; w maps state_dict names to OIHW/vector arrays."""
  def unit(name, x, stride=1, pad=(0, 0)):
    y = reference_conv(x, w[name + '.conv.weight'], stride,
                       ((pad[0], pad[0]), (pad[1], pad[1])))
    c = (slice(None), None, None)
    y = ((y - w[name + '.bn.running_mean'][c])
         / np.sqrt(w[name + '.bn.running_var'][c] + 1e-3)
         * w[name + '.bn.weight'][c] + w[name + '.bn.bias'][c])
    return np.maximum(y, 0.0)

  def block_a(n, x):
    b1 = unit(n + '.branch1x1', x)
    b5 = unit(n + '.branch5x5_2', unit(n + '.branch5x5_1', x), pad=(2, 2))
    b3 = unit(n + '.branch3x3dbl_1', x)
    b3 = unit(n + '.branch3x3dbl_2', b3, pad=(1, 1))
    b3 = unit(n + '.branch3x3dbl_3', b3, pad=(1, 1))
    bp = unit(n + '.branch_pool', reference_pool(x, 1, 1, 'avg'))
    return np.concatenate([b1, b5, b3, bp], axis=1)

  def block_b(n, x):
    b3 = unit(n + '.branch3x3', x, stride=2)
    bd = unit(n + '.branch3x3dbl_1', x)
    bd = unit(n + '.branch3x3dbl_2', bd, pad=(1, 1))
    bd = unit(n + '.branch3x3dbl_3', bd, stride=2)
    return np.concatenate([b3, bd, reference_pool(x, 2, 0, 'max')], axis=1)

  def block_c(n, x):
    b1 = unit(n + '.branch1x1', x)
    b7 = unit(n + '.branch7x7_1', x)
    b7 = unit(n + '.branch7x7_2', b7, pad=(0, 3))
    b7 = unit(n + '.branch7x7_3', b7, pad=(3, 0))
    bd = unit(n + '.branch7x7dbl_1', x)
    for i, pad in zip(range(2, 6), [(3, 0), (0, 3), (3, 0), (0, 3)]):
      bd = unit(f'{n}.branch7x7dbl_{i}', bd, pad=pad)
    bp = unit(n + '.branch_pool', reference_pool(x, 1, 1, 'avg'))
    return np.concatenate([b1, b7, bd, bp], axis=1)

  def block_d(n, x):
    b3 = unit(n + '.branch3x3_2', unit(n + '.branch3x3_1', x), stride=2)
    b7 = unit(n + '.branch7x7x3_1', x)
    b7 = unit(n + '.branch7x7x3_2', b7, pad=(0, 3))
    b7 = unit(n + '.branch7x7x3_3', b7, pad=(3, 0))
    b7 = unit(n + '.branch7x7x3_4', b7, stride=2)
    return np.concatenate([b3, b7, reference_pool(x, 2, 0, 'max')], axis=1)

  def block_e(n, x, pool):
    b1 = unit(n + '.branch1x1', x)
    b3 = unit(n + '.branch3x3_1', x)
    b3 = np.concatenate([unit(n + '.branch3x3_2a', b3, pad=(0, 1)),
                         unit(n + '.branch3x3_2b', b3, pad=(1, 0))], axis=1)
    bd = unit(n + '.branch3x3dbl_2', unit(n + '.branch3x3dbl_1', x),
              pad=(1, 1))
    bd = np.concatenate([unit(n + '.branch3x3dbl_3a', bd, pad=(0, 1)),
                         unit(n + '.branch3x3dbl_3b', bd, pad=(1, 0))], axis=1)
    bp = unit(n + '.branch_pool', reference_pool(x, 1, 1, pool))
    return np.concatenate([b1, b3, bd, bp], axis=1)

  x = np.float64(images).transpose(0, 3, 1, 2)
  x = 2.0 * reference_resize(x, 299) - 1.0
  x = unit('Conv2d_1a_3x3', x, stride=2)
  x = unit('Conv2d_2a_3x3', x)
  x = unit('Conv2d_2b_3x3', x, pad=(1, 1))
  x = reference_pool(x, 2, 0, 'max')
  x = unit('Conv2d_4a_3x3', unit('Conv2d_3b_1x1', x))
  x = reference_pool(x, 2, 0, 'max')
  for name in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d'):
    x = block_a(name, x)
  x = block_b('Mixed_6a', x)
  for name in ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
    x = block_c(name, x)
  x = block_d('Mixed_7a', x)
  x = block_e('Mixed_7c', block_e('Mixed_7b', x, 'avg'), 'max')
  return x.mean(axis=(2, 3))


def random_inception_weights(seed=0):
  """Synthetic weights with the documented names and shapes, He-normal convs
  and batch norms near identity, so activations stay O(1) through the net."""
  rng = np.random.default_rng(seed)
  w = {}
  for key, shape in inception.inception_npz_spec().items():
    if key.endswith('conv.weight'):
      w[key] = rng.standard_normal(shape, np.float32)
      w[key] *= np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
    elif key.endswith('running_var'):
      w[key] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    elif key.endswith('bn.weight'):
      w[key] = rng.uniform(0.8, 1.2, size=shape).astype(np.float32)
    else:  # bn.bias, running_mean
      w[key] = rng.normal(scale=0.1, size=shape).astype(np.float32)
  return w


def reference_random_conv(images, kernels):
  """random_conv64-v1 on 64x64 NHWC images: TF 'SAME' stride-2 convs (for an
  even side a 3x3 kernel pads 0 before, 1 after), ReLU, mean and std."""
  x = np.float64(images)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  x = x.transpose(0, 3, 1, 2) - 0.5
  out = []
  for k in kernels:
    x = reference_conv(x, np.float64(k).transpose(3, 2, 0, 1), stride=2,
                       padding=((0, 1), (0, 1)))
    x = np.maximum(x, 0.0)
    out += [x.mean(axis=(2, 3)), x.std(axis=(2, 3))]
  return np.concatenate(out, axis=1)


def blobs(n, size, seed, shift=0.0):
  """Smooth random grey-ish colour images in [0, 1]."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(size=(n, 4, 4, 3))
  x = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
  return np.clip(x + shift, 0.0, 1.0).astype(np.float32)


class RandomConvTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.net = features.get_feature_network()
    cls.images = np.random.default_rng(0).uniform(
        size=(7, 64, 64, 3)).astype(np.float32)

  def test_splitmix64_matches_sequential_generator(self):
    got = features.splitmix64(12345, 5)
    self.assertEqual([int(v) for v in got], reference_splitmix64(12345, 5))
    # The published first output from state 0.
    self.assertEqual(int(features.splitmix64(0, 1)[0]), 0xE220A8397B1DCDAF)

  def test_kernels_depend_only_on_the_seed(self):
    kernels = features.random_conv_kernels(0)
    self.assertEqual([k.shape for k in kernels],
                     [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64),
                      (3, 3, 64, 128)])
    # First entries from the Python-integer generator and Box-Muller.
    z = reference_splitmix64(0, 6)
    u = [(v >> 11) * 2.0 ** -53 for v in z]
    want = [np.sqrt(-2 * np.log(1 - u[2 * i]))
            * np.cos(2 * np.pi * u[2 * i + 1]) * np.sqrt(2 / 27)
            for i in range(3)]
    np.testing.assert_allclose(kernels[0].reshape(-1)[:3], want, rtol=1e-6)
    # He-normal scale.
    self.assertAlmostEqual(kernels[3].std(), np.sqrt(2 / 576), delta=0.02 *
                           np.sqrt(2 / 576))
    again = features.random_conv_kernels(0)
    other = features.random_conv_kernels(1)
    for a, b, c in zip(kernels, again, other):
      np.testing.assert_array_equal(a, b)
      self.assertFalse(np.allclose(a, c))

  def test_name_dim_and_features_match_reference(self):
    self.assertEqual(self.net.name, 'random_conv64-v1(seed=0)')
    self.assertEqual(self.net.dim, 512)
    self.assertEqual(features.get_feature_network(seed=3).name,
                     'random_conv64-v1(seed=3)')
    got = self.net(self.images)
    self.assertEqual(got.shape, (7, 512))
    self.assertEqual(got.dtype, np.float32)
    want = reference_random_conv(self.images, features.random_conv_kernels(0))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Deterministic, and a new network object with the same seed agrees.
    np.testing.assert_array_equal(got, self.net(self.images))
    np.testing.assert_array_equal(
        got, features.get_feature_network('random_conv')(self.images))
    self.assertFalse(np.allclose(
        got, features.get_feature_network(seed=1)(self.images)))

  def test_padded_batches_equal_one_batch_and_compile_once(self):
    images = np.random.default_rng(1).uniform(size=(7, 40, 40, 3))
    before = features._random_conv_apply._cache_size()
    padded = self.net(images, batch_size=3)  # batches of 3, 3, 1 + 2 zeros
    self.assertEqual(features._random_conv_apply._cache_size() - before, 1)
    whole = self.net(images, batch_size=200)  # one batch of 7
    np.testing.assert_allclose(padded, whole, rtol=1e-5, atol=1e-6)

  def test_grey_is_repeated_and_small_images_are_resized(self):
    grey = self.images[..., :1]
    np.testing.assert_allclose(self.net(grey),
                               self.net(np.repeat(grey, 3, axis=-1)),
                               rtol=1e-6, atol=1e-7)
    small = self.images[:3, ::2, ::2]  # 32x32, upsampled bilinearly to 64
    up = reference_resize(np.float64(small).transpose(0, 3, 1, 2), 64)
    np.testing.assert_allclose(
        self.net(small),
        reference_random_conv(up.transpose(0, 2, 3, 1),
                              features.random_conv_kernels(0)),
        rtol=1e-4, atol=1e-5)

  def test_bad_input(self):
    with self.assertRaisesRegex(UserInputError, r'\[N >= 1, H, W, C\]'):
      self.net(self.images[0])
    with self.assertRaisesRegex(UserInputError, r'C = 1 or 3'):
      self.net(self.images[..., :2])
    with self.assertRaisesRegex(UserInputError, r'in \[0, 1\].*255'):
      self.net(self.images * 255)
    with self.assertRaisesRegex(UserInputError, 'batch_size'):
      self.net(self.images, batch_size=0)
    with self.assertRaisesRegex(UserInputError, 'unknown feature network'):
      features.get_feature_network('vgg')
    with self.assertRaisesRegex(UserInputError, 'no weights file'):
      features.get_feature_network('random_conv', 'w.npz')
    with self.assertRaisesRegex(UserInputError, 'needs weights_path'):
      features.get_feature_network('inception_v3')
    with self.assertRaisesRegex(UserInputError, 'seed'):
      features.get_feature_network(seed=-1)


class FrechetOfImagesTest(absltest.TestCase):

  def test_identical_sets_zero_shifted_sets_larger(self):
    net = features.get_feature_network()
    a = blobs(48, 32, seed=0)
    same = features.frechet_distance_of_images(a, a, net)
    self.assertEqual(same['network'], 'random_conv64-v1(seed=0)')
    self.assertEqual((same['num_a'], same['num_b']), (48, 48))
    scale = np.trace(quality.feature_statistics(net(a))[1])
    self.assertLess(abs(same['value']), 1e-6 * scale)
    near = features.frechet_distance_of_images(a, blobs(48, 32, 0, 0.1),
                                               'random_conv')
    far = features.frechet_distance_of_images(a, blobs(48, 32, 0, 0.3), net)
    self.assertLess(same['value'] + 1e-3 * scale, near['value'])
    self.assertLess(near['value'], far['value'])
    # The same number as the two-step computation.
    fb = net(blobs(48, 32, 0, 0.3))
    want = quality.frechet_distance(*quality.feature_statistics(net(a)),
                                    *quality.feature_statistics(fb))
    self.assertAlmostEqual(far['value'], want, places=9)

  def test_too_few_images(self):
    with self.assertRaisesRegex(UserInputError, 'N >= 2'):
      features.frechet_distance_of_images(blobs(1, 8, 0), blobs(3, 8, 1))


class InceptionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.weights = random_inception_weights()

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  def test_spec(self):
    spec = inception.inception_npz_spec()
    self.assertLen(spec, 470)
    self.assertEqual(spec['Conv2d_1a_3x3.conv.weight'], (32, 3, 3, 3))
    self.assertEqual(spec['Mixed_5b.branch5x5_2.conv.weight'], (64, 48, 5, 5))
    self.assertEqual(spec['Mixed_6b.branch7x7_2.conv.weight'],
                     (128, 128, 1, 7))
    self.assertEqual(spec['Mixed_7c.branch_pool.conv.weight'],
                     (192, 2048, 1, 1))
    self.assertEqual(spec['Mixed_7c.branch_pool.bn.running_var'], (192,))
    # InceptionV3 without its classifier: 21.8M numbers.
    self.assertEqual(sum(int(np.prod(s)) for s in spec.values()), 21_820_000)

  def test_features_match_numpy_reference(self):
    weights = self.weights

    class FakeTensor:  # what save_inception_npz_from_torch sees from torch
      def __init__(self, value):
        self.value = value

      def detach(self):
        return self

      def cpu(self):
        return self

      def numpy(self):
        return self.value

    state_dict = {key: FakeTensor(value) for key, value in weights.items()}
    state_dict['fc.weight'] = np.zeros((1008, 2048), np.float32)  # ignored
    state_dict['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.int64(0)
    path = inception.save_inception_npz_from_torch(
        state_dict, os.path.join(self.dir, 'weights'))
    self.assertEqual(os.path.basename(path), 'weights.npz')

    net = features.get_feature_network('inception_v3', path)
    with open(path, 'rb') as f:
      digest = hashlib.sha256(f.read()).hexdigest()[:12]
    self.assertEqual(net.name,
                     f'inception_v3_pool3(weights.npz, sha256:{digest})')
    self.assertEqual(net.dim, 2048)
    images = np.random.default_rng(0).uniform(
        size=(2, 32, 32, 3)).astype(np.float32)
    got = net(images)
    self.assertEqual(got.shape, (2, 2048))
    self.assertFalse(np.allclose(got[0], got[1]))
    want = reference_inception_pool3(images[:1], weights)[0]  # ~5 s each
    self.assertGreater(np.std(want), 0.01)  # the random net is not dead
    np.testing.assert_allclose(got[0], want, rtol=1e-3,
                               atol=1e-4 * np.abs(want).max())
    np.testing.assert_array_equal(got, net(images))  # deterministic

  def test_bad_weight_files(self):
    weights = self.weights
    with self.assertRaisesRegex(UserInputError, 'not found'):
      features.get_feature_network('inception_v3',
                                   os.path.join(self.dir, 'absent.npz'))
    text = os.path.join(self.dir, 'text.npz')
    with open(text, 'w') as f:
      f.write('not weights')
    with self.assertRaisesRegex(UserInputError, 'cannot read'):
      features.get_feature_network('inception_v3', text)
    single = os.path.join(self.dir, 'single.npy')
    np.save(single, np.zeros(3))
    with self.assertRaisesRegex(UserInputError, 'not an .npz'):
      features.get_feature_network('inception_v3', single)

    missing = dict(weights)
    del missing['Mixed_6c.branch7x7_2.conv.weight']
    path = os.path.join(self.dir, 'missing.npz')
    np.savez(path, **missing)
    with self.assertRaisesRegex(UserInputError,
                                r'lacks 1 of the 470.*Mixed_6c\.branch7x7_2'):
      features.get_feature_network('inception_v3', path)
    with self.assertRaisesRegex(UserInputError, 'lacks 1 of the 470'):
      inception.save_inception_npz_from_torch(missing, path)

    bad = dict(weights)
    bad['Conv2d_2a_3x3.conv.weight'] = bad['Conv2d_2a_3x3.conv.weight'].T
    path = os.path.join(self.dir, 'bad.npz')
    np.savez(path, **bad)
    with self.assertRaisesRegex(
        UserInputError,
        r'1 mismatched.*Conv2d_2a_3x3\.conv\.weight: \(3, 3, 32, 32\), '
        r'expected \(32, 32, 3, 3\)'):
      features.get_feature_network('inception_v3', path)


if __name__ == '__main__':
  absltest.main()
