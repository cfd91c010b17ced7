"""Reconstruction and sample quality: per-image MSE, PSNR, SSIM, BCE, and the
Fréchet distance between two sets of image features.

Images are float [B, H, W, C] with pixels in [0, 1] (`max_val` = 1).

  mse    mean over pixels and channels of (x - y)^2
  psnr   10 log10(max_val^2 / mse), +inf for identical images
  ssim   Wang et al. 2004 as `tf.image.ssim` computes it: an 11x11 Gaussian
         window (sigma 1.5) over 'VALID' positions, K1 = 0.01, K2 = 0.03,
         averaged over positions and channels
  bce    summed over pixels: -x log p - (1 - x) log(1 - p), with the
         reconstruction's probabilities p clipped to [1e-6, 1 - 1e-6]

`frechet_distance(mu1, cov1, mu2, cov2)` is ||mu1 - mu2||^2 + tr(cov1 + cov2
- 2 (cov1 cov2)^(1/2)) computed in float64 (the K x K matrix square root is
where float32 loses the answer); `feature_statistics` gives (mu, cov) of a
feature matrix.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError


def _check_pair(x, y) -> tuple[jax.Array, jax.Array]:
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise UserInputError('images must both be [B, H, W, C]; got '
                         f'{x.shape} and {y.shape}')
  return x, y


@jax.jit
def _mse(x, y):
  return jnp.mean(jnp.square(x - y), axis=(1, 2, 3))


def mse(x, y) -> jax.Array:
  """Per-image mean squared error, [B]."""
  return _mse(*_check_pair(x, y))


def psnr(x, y, max_val: float = 1.0) -> jax.Array:
  """Per-image peak signal-to-noise ratio in dB, [B] (+inf if equal)."""
  err = mse(x, y)
  return 10.0 * jnp.log10(max_val ** 2 / err)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * np.square(coords / sigma))
  return (g / g.sum()).astype(np.float32)


@functools.partial(jax.jit, static_argnames=('max_val', 'filter_size',
                                             'sigma', 'k1', 'k2'))
def _ssim(x, y, max_val, filter_size, sigma, k1, k2):
  g = jnp.asarray(_gaussian_window(filter_size, sigma))
  channels = x.shape[-1]

  def blur(v):  # separable 'VALID' Gaussian filter, channel by channel
    v = jnp.moveaxis(v, -1, 1).reshape(-1, 1, *v.shape[1:3])  # [BC,1,H,W]
    for kernel in (g.reshape(1, 1, -1, 1), g.reshape(1, 1, 1, -1)):
      v = jax.lax.conv_general_dilated(v, kernel, (1, 1), 'VALID')
    return v.reshape(-1, channels, *v.shape[2:])

  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x ** 2
  var_y = blur(y * y) - mu_y ** 2
  cov = blur(x * y) - mu_x * mu_y
  luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
  structure = (2 * cov + c2) / (var_x + var_y + c2)
  return jnp.mean(luminance * structure, axis=(1, 2, 3))


def ssim(x, y, max_val: float = 1.0, filter_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Per-image structural similarity, [B] (1 for identical images)."""
  x, y = _check_pair(x, y)
  if min(x.shape[1:3]) < filter_size:
    raise UserInputError(f'ssim needs images of at least {filter_size}x'
                         f'{filter_size}; got {x.shape[1]}x{x.shape[2]}')
  return _ssim(x, y, float(max_val), int(filter_size), float(sigma),
               float(k1), float(k2))


@jax.jit
def _bce(x, p):
  p = jnp.clip(p, 1e-6, 1.0 - 1e-6)
  return -jnp.sum(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p), axis=(1, 2, 3))


def bce(x, reconstruction) -> jax.Array:
  """Per-image binary cross-entropy in nats, [B].

  Args:
    x: targets in [0, 1].
    reconstruction: the reconstruction's pixel probabilities in [0, 1].
  """
  return _bce(*_check_pair(x, reconstruction))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mean [K], covariance [K, K]) of features [N, K], float64, unbiased
  covariance (N - 1), as the FID reference computes them."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise UserInputError(f'features must be [N >= 2, K]; got {f.shape}')
  if not np.all(np.isfinite(f)):
    raise UserInputError('features contain non-finite values')
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Fréchet distance between N(mu1, cov1) and N(mu2, cov2).

  tr((cov1 cov2)^(1/2)) is computed as the sum of the square roots of the
  eigenvalues of S cov2 S with S = cov1^(1/2) (symmetric, so `eigh` applies;
  tiny negative eigenvalues from rounding are clipped to 0).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  w, v = np.linalg.eigh(cov1)
  root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
  trace_root = np.sum(np.sqrt(np.clip(inner, 0.0, None)))
  return float(np.sum(np.square(mu1 - mu2)) + np.trace(cov1) + np.trace(cov2)
               - 2.0 * trace_root)
