"""Reconstruction and sample quality metrics against float64 NumPy/SciPy
references and closed forms."""

from absl.testing import absltest
import numpy as np
from scipy import linalg
from scipy import signal

from msdr.errors import UserInputError
from msdr.eval import quality


def reference_ssim(x, y, max_val=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """Wang et al. 2004 with a 2-D Gaussian window over 'valid' positions."""
  coords = np.arange(size) - (size - 1) / 2.0
  g = np.exp(-0.5 * (coords / sigma) ** 2)
  window = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  out = []
  for a, b in zip(np.float64(x), np.float64(y)):
    maps = []
    for ch in range(a.shape[-1]):
      f = lambda v: signal.correlate2d(v, window, mode='valid')
      u, v = a[..., ch], b[..., ch]
      mu_u, mu_v = f(u), f(v)
      var_u = f(u * u) - mu_u ** 2
      var_v = f(v * v) - mu_v ** 2
      cov = f(u * v) - mu_u * mu_v
      maps.append((2 * mu_u * mu_v + c1) * (2 * cov + c2)
                  / ((mu_u ** 2 + mu_v ** 2 + c1) * (var_u + var_v + c2)))
    out.append(np.mean(maps))
  return np.array(out)


class PixelMetricsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.x = rng.uniform(size=(3, 16, 20, 3)).astype(np.float32)
    noise = rng.normal(scale=0.1, size=self.x.shape)
    self.y = np.clip(self.x + noise, 0, 1).astype(np.float32)

  def test_mse_and_psnr(self):
    want = np.mean((np.float64(self.x) - self.y) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(quality.mse(self.x, self.y), want, rtol=1e-5)
    np.testing.assert_allclose(quality.psnr(self.x, self.y),
                               10 * np.log10(1.0 / want), rtol=1e-5)
    self.assertTrue(np.all(np.isinf(quality.psnr(self.x, self.x))))

  def test_ssim_matches_reference_and_is_one_for_equal_images(self):
    np.testing.assert_allclose(quality.ssim(self.x, self.y),
                               reference_ssim(self.x, self.y), atol=1e-5)
    np.testing.assert_allclose(quality.ssim(self.x, self.x), 1.0, atol=1e-5)

  def test_ssim_of_flat_images_is_the_luminance_term(self):
    a, b = 0.2, 0.7
    x = np.full((1, 12, 12, 1), a, np.float32)
    y = np.full((1, 12, 12, 1), b, np.float32)
    c1 = 0.01 ** 2
    np.testing.assert_allclose(quality.ssim(x, y),
                               [(2 * a * b + c1) / (a * a + b * b + c1)],
                               rtol=1e-4)

  def test_bce(self):
    p = np.clip(np.float64(self.y), 1e-6, 1 - 1e-6)
    want = -np.sum(self.x * np.log(p) + (1 - self.x) * np.log(1 - p),
                   axis=(1, 2, 3))
    np.testing.assert_allclose(quality.bce(self.x, self.y), want, rtol=1e-4)
    # Saturated reconstructions stay finite.
    self.assertTrue(np.all(np.isfinite(quality.bce(self.x, self.x > 0.5))))

  def test_bad_shapes(self):
    with self.assertRaisesRegex(UserInputError, r'\[B, H, W, C\]'):
      quality.mse(self.x, self.y[:2])
    with self.assertRaisesRegex(UserInputError, 'at least 11x11'):
      quality.ssim(self.x[:, :8, :8], self.y[:, :8, :8])


class FrechetTest(absltest.TestCase):

  def test_one_dimension_closed_form(self):
    # (mu1 - mu2)^2 + (s1 - s2)^2 for two 1-D Gaussians.
    d = quality.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]])
    self.assertAlmostEqual(d, 4.0 + 1.0, places=10)

  def test_identical_statistics_give_zero(self):
    rng = np.random.default_rng(1)
    mu, cov = quality.feature_statistics(rng.normal(size=(200, 6)))
    self.assertAlmostEqual(quality.frechet_distance(mu, cov, mu, cov), 0.0,
                           places=8)

  def test_matches_scipy_sqrtm_reference(self):
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(300, 8))
    f2 = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.5
    mu1, cov1 = quality.feature_statistics(f1)
    mu2, cov2 = quality.feature_statistics(f2)
    np.testing.assert_allclose(mu1, f1.mean(0))
    np.testing.assert_allclose(cov1, np.cov(f1, rowvar=False))
    root = linalg.sqrtm(cov1 @ cov2).real
    want = (np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2)
            - 2 * np.trace(root))
    self.assertAlmostEqual(quality.frechet_distance(mu1, cov1, mu2, cov2),
                           want, places=6)

  def test_bad_features(self):
    with self.assertRaisesRegex(UserInputError, 'non-finite'):
      quality.feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with self.assertRaisesRegex(UserInputError, r'\[N >= 2, K\]'):
      quality.feature_statistics(np.zeros((1, 3)))


if __name__ == '__main__':
  absltest.main()
