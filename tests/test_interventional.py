"""The FactorVAE and BetaVAE scores on procedural dSprites with a
hand-written representation (centroid x, centroid y, area, a dead
dimension), against NumPy ports of disentanglement_lib's algorithms with
their own random draws (and, for BetaVAE, scikit-learn's logistic regression
objective minimised by SciPy)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from msdr import data
from msdr.errors import UserInputError
from msdr.eval import interventional
from tests import test_linear

DSPRITES = data.get_dataset('dsprites')
POS_X, POS_Y, SCALE = 3, 4, 1  # factor columns of dsprites


@jax.jit
def centroid_representation(images):
  """[n, 64, 64, 1] -> [n, 4]: centroid x, centroid y, area, constant."""
  img = images[..., 0]
  coords = jnp.arange(64, dtype=jnp.float32) / 64.0
  mass = img.sum(axis=(1, 2))
  cx = (img * coords[None, None, :]).sum(axis=(1, 2)) / mass
  cy = (img * coords[None, :, None]).sum(axis=(1, 2)) / mass
  return jnp.stack([cx, cy, mass / 400.0, jnp.zeros_like(mass)], axis=1)


def reference_draws(seed):
  """(rng, sample(n) -> factors, encode(factors) -> codes) for the NumPy
  references: factors from a NumPy RandomState, codes in float64."""
  rng = np.random.RandomState(seed)
  key = jax.random.key(seed)

  def sample(n):
    return np.stack([rng.randint(s, size=n) for s in DSPRITES.factor_sizes],
                    axis=1)

  def encode(f):
    obs = DSPRITES.observations_from_factors(jnp.asarray(f, jnp.int32), key)
    return np.asarray(centroid_representation(obs), np.float64)

  return rng, sample, encode


def reference_factor_vae(seed, batch_size, num_train, num_eval, num_var,
                         threshold=0.05):
  """disentanglement_lib's compute_factor_vae, in NumPy, one point at a
  time, drawing factors with a NumPy RandomState."""
  rng, sample, encode = reference_draws(seed)
  sizes = DSPRITES.factor_sizes

  variances = np.var(encode(sample(num_var)), axis=0, ddof=1)
  active = np.sqrt(variances) >= threshold

  def votes(points):
    v = np.zeros((len(sizes), active.sum()), np.int64)
    for _ in range(points):
      k = rng.randint(len(sizes))
      f = sample(batch_size)
      f[:, k] = f[0, k]
      local = np.var(encode(f), axis=0, ddof=1)
      v[k, np.argmin(local[active] / variances[active])] += 1
    return v

  train = votes(num_train)
  classifier = np.argmax(train, axis=0)
  cols = np.arange(train.shape[1])
  ev = votes(num_eval)
  return (train[classifier, cols].sum() / train.sum(),
          ev[classifier, cols].sum() / ev.sum(), classifier)


class FactorVaeScoreTest(absltest.TestCase):

  def score(self, seed, **kwargs):
    options = dict(batch_size=16, num_train=1500, num_eval=1500,
                   num_variance_estimate=2000)
    options.update(kwargs)
    return interventional.factor_vae_score(
        DSPRITES, centroid_representation, jax.random.key(seed), **options)

  def test_matches_reference_in_the_mean_over_seeds(self):
    ours = [self.score(seed) for seed in range(3)]
    theirs = [reference_factor_vae(seed, 16, 1000, 1000, 2000)
              for seed in range(3)]
    for r in ours:
      self.assertEqual(r['num_active_dims'], 3)  # the constant is pruned
    # Each active dim is claimed by the factor it measures.
    for _, _, classifier in theirs:
      np.testing.assert_array_equal(classifier, [POS_X, POS_Y, SCALE])
    mean_ours = np.mean([r['eval_accuracy'] for r in ours])
    mean_theirs = np.mean([t[1] for t in theirs])
    # Seeded on both sides, so this is deterministic; the sampling spread of
    # the difference is about 0.012 at these sizes.
    self.assertAlmostEqual(mean_ours, mean_theirs, delta=0.02)

  def test_partial_representation_scores_by_its_factors(self):
    # Only 3 of 5 factors are measured; points of the other two factors
    # vote at random, so accuracy sits well inside (0.4, 1).
    result = self.score(4)
    self.assertGreater(result['eval_accuracy'], 0.4)
    self.assertLess(result['eval_accuracy'], 0.95)
    self.assertAlmostEqual(result['train_accuracy'],
                           result['eval_accuracy'], delta=0.08)

  def test_untraceable_representation_runs_eagerly_with_the_same_result(self):
    # A NumPy representation_fn cannot be jitted with the renderer; the
    # metric falls back to rendering and encoding eagerly, same draws.
    numpy_fn = lambda x: np.asarray(centroid_representation(x))
    args = dict(batch_size=8, num_train=40, num_eval=40,
                num_variance_estimate=64, chunk=64)
    eager = interventional.factor_vae_score(DSPRITES, numpy_fn,
                                            jax.random.key(5), **args)
    jitted = interventional.factor_vae_score(
        DSPRITES, centroid_representation, jax.random.key(5), **args)
    self.assertEqual(eager, jitted)
    self.assertEqual(eager['num_active_dims'], 3)

  def test_dead_representation_scores_zero(self):
    result = interventional.factor_vae_score(
        DSPRITES, lambda x: jnp.zeros((x.shape[0], 3)), jax.random.key(0),
        batch_size=4, num_train=10, num_eval=10, num_variance_estimate=16)
    self.assertEqual(result, {'train_accuracy': 0.0, 'eval_accuracy': 0.0,
                              'num_active_dims': 0})

  def test_bad_inputs(self):
    with self.assertRaisesRegex(UserInputError, 'at least 2'):
      self.score(0, batch_size=1)
    with self.assertRaisesRegex(UserInputError, 'positive int'):
      self.score(0, num_train=0)
    with self.assertRaisesRegex(UserInputError, 'non-finite'):
      interventional.factor_vae_score(
          DSPRITES, lambda x: jnp.full((x.shape[0], 2), jnp.nan),
          jax.random.key(0), batch_size=4, num_train=4, num_eval=4,
          num_variance_estimate=8)


class SummariesTest(absltest.TestCase):

  def test_per_point_summaries_match_numpy(self):
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(4 * 6, 3)).astype(np.float32)  # 4 batches of 6
    np.testing.assert_allclose(
        interventional._batch_variances(jnp.asarray(codes), 6),
        np.var(codes.astype(np.float64).reshape(4, 6, 3), axis=1, ddof=1),
        rtol=1e-5)
    # Rows: the x1 batches of two points, then their x2 batches.
    c1, c2 = codes[:12].astype(np.float64), codes[12:].astype(np.float64)
    np.testing.assert_allclose(
        interventional._batch_abs_differences(jnp.asarray(codes), 6),
        np.abs(c1 - c2).reshape(2, 6, 3).mean(axis=1), rtol=1e-5)

  def test_chunking_does_not_change_the_scores(self):
    # dSprites renders without noise, so the chunks (each its own key) and
    # the zero rows padding the last one must not change any score: 10
    # points in chunks of 3 (FactorVAE) or 1 (BetaVAE), 20 variance rows in
    # chunks of 24 (one padded chunk), against one chunk each.
    args = dict(batch_size=8, num_train=10, num_eval=7)
    for score, extra in ((interventional.factor_vae_score,
                          dict(num_variance_estimate=20)),
                         (interventional.beta_vae_score, {})):
      small = score(DSPRITES, centroid_representation, jax.random.key(1),
                    chunk=24, **args, **extra)
      whole = score(DSPRITES, centroid_representation, jax.random.key(1),
                    **args, **extra)
      self.assertEqual(small, whole)
    rows = interventional._chunk_rows(np.arange(10).reshape(5, 2), 2)
    np.testing.assert_array_equal(rows[-1], [[8, 9], [0, 0]])

  def test_codes_of_the_wrong_shape_are_an_error(self):
    for fn in (lambda x: jnp.zeros((x.shape[0],)),  # traced: no code axis
               lambda x: np.zeros((3, 2), np.float32)):  # eager: wrong rows
      with self.assertRaisesRegex(UserInputError, r'codes \[n, K\]'):
        interventional.factor_vae_score(
            DSPRITES, fn, jax.random.key(0), batch_size=4, num_train=4,
            num_eval=4, num_variance_estimate=8)

  def test_non_finite_codes_are_an_error_when_eager_too(self):
    numpy_nan = lambda x: np.full((x.shape[0], 2), np.nan, np.float32)
    with self.assertRaisesRegex(UserInputError, '16 non-finite'):
      interventional.global_variances(DSPRITES, numpy_nan, jax.random.key(0),
                                      num=8, chunk=4)


def reference_beta_vae(seed, batch_size, num_train, num_eval):
  """disentanglement_lib's compute_beta_vae_sklearn in NumPy, point by
  point; returns (train accuracy, eval accuracy)."""
  rng, sample, encode = reference_draws(seed)
  sizes = DSPRITES.factor_sizes

  def points(n):
    features, labels = [], []
    for _ in range(n):
      k = rng.randint(len(sizes))
      f1, f2 = sample(batch_size), sample(batch_size)
      f2[:, k] = f1[:, k]
      features.append(np.mean(np.abs(encode(f1) - encode(f2)), axis=0))
      labels.append(k)
    return np.array(features), np.array(labels)

  x_train, y_train = points(num_train)
  x_eval, y_eval = points(num_eval)
  w, b, classes = test_linear.reference_logistic_regression(x_train, y_train)
  accuracy = lambda x, y: np.mean(classes[np.argmax(x @ w + b, axis=1)] == y)
  return accuracy(x_train, y_train), accuracy(x_eval, y_eval)


class BetaVaeScoreTest(absltest.TestCase):

  def test_matches_reference_in_the_mean_over_seeds(self):
    ours = [interventional.beta_vae_score(
        DSPRITES, centroid_representation, jax.random.key(seed),
        batch_size=16, num_train=1000, num_eval=1000) for seed in range(3)]
    theirs = [reference_beta_vae(seed, 16, 1000, 1000) for seed in range(3)]
    for name, column in (('train_accuracy', 0), ('eval_accuracy', 1)):
      self.assertAlmostEqual(np.mean([r[name] for r in ours]),
                             np.mean([t[column] for t in theirs]),
                             delta=0.02, msg=name)
    # 3 of 5 factors are measured: clearly better than chance (0.2).
    self.assertGreater(np.mean([r['eval_accuracy'] for r in ours]), 0.6)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(UserInputError, 'positive int'):
      interventional.beta_vae_score(DSPRITES, centroid_representation,
                                    jax.random.key(0), num_eval=0)


if __name__ == '__main__':
  absltest.main()
