"""Figures and reports: exact grid sizes, traversals that move (and do not
move along a dead dimension), the MI matrix against a hand count, and the
smoke run of the one command (both stages, eval, report): every figure and
eval.json value in its report, the same bytes when rendered again, and
--mode=report / --mode=compare from the command line."""

import base64
import io
import json
import math
import os
import re
import tempfile

from absl.testing import absltest
import jax
import numpy as np
from PIL import Image

from configs import common
import msdr
from msdr import multistage
from msdr import options
from msdr.errors import UserInputError
from msdr.train import run
from msdr.viz import grid
from msdr.viz import pages
from msdr.viz import plots
from msdr.viz import report
from tests.test_main import run_cli

H = 64  # image side
PAD = 1


def grid_size(rows, columns, zoom, labelled=True):
  """(height, width) of a grid of 64 x 64 images, computed from the layout."""
  height = zoom * (rows * (H + PAD) + PAD)
  width = zoom * (columns * (H + PAD) + PAD)
  return height, width + (grid.LABEL_WIDTH if labelled else 0)


def png_size(data):
  image = Image.open(io.BytesIO(data))
  return image.height, image.width


def gif_frames(data):
  image = Image.open(io.BytesIO(data))
  frames = []
  for i in range(image.n_frames):
    image.seek(i)
    frames.append(np.asarray(image.convert('RGB'), np.int32))
  return frames


def with_dead_dimension(model, dead):
  """The model with stage 1's decoder blind to code dimension `dead` (its
  row of the first dense layer zeroed)."""
  params1 = jax.tree.map(lambda a: a, model.params1)
  kernel = params1['decoder']['Dense_0']['kernel']
  params1['decoder']['Dense_0']['kernel'] = kernel.at[dead].set(0.0)
  return multistage.MultiStage.from_parts(model.stage1, params1, model.stage2,
                                          model.params2)


class SmokeRun(absltest.TestCase):
  """Shares one smoke run (dsprites, MS-VAE, both stages, evaluated, with
  its report) trained by the one command line, plus an MS-GMM stage 2 on
  its stage 1 (no eval, no report) for --mode=compare."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    if hasattr(SmokeRun, 'vae'):
      return
    # Not create_tempdir: the runs are shared by several test classes.
    root = tempfile.mkdtemp(prefix='msdr-report-')
    vae = os.path.join(root, 'vae')
    proc = run_cli('--config', 'configs/dsprites_ms_vae.py:smoke',
                   '--workdir', vae)
    assert proc.returncode == 0, proc.stderr[-3000:]
    SmokeRun.cli_stdout = proc.stdout
    gmm = os.path.join(root, 'gmm')
    config = common.multistage_config('dsprites', 'ms_gmm', 'smoke')
    config.stage1.init_from = vae
    config.eval.after_training = False
    config.report.after_training = False
    os.makedirs(gmm)
    with open(os.path.join(gmm, 'config.json'), 'w') as f:
      f.write(config.to_json())
    run.run(config, gmm)
    SmokeRun.root, SmokeRun.vae, SmokeRun.gmm = root, vae, gmm
    SmokeRun.config = common.multistage_config('dsprites', 'ms_vae', 'smoke')


class GridTest(absltest.TestCase):

  def test_labelled_grid_has_the_layout_size(self):
    images = np.zeros((3, 5, H, H, 3), np.float32)
    self.assertEqual(grid.labelled_grid(images, ['a', 'b', 'c']).shape,
                     grid_size(3, 5, grid.ZOOM) + (3,))
    self.assertEqual(grid.labelled_grid(images, factor=1).shape,
                     grid_size(3, 5, 1, labelled=False) + (3,))

  def test_gif_keeps_every_distinct_frame(self):
    frames = [np.full((4, 6, 1), v, np.uint8) for v in (0, 100, 200)]
    decoded = gif_frames(grid.gif_bytes(frames))
    self.assertLen(decoded, 3)
    self.assertEqual([f[0, 0, 0] for f in decoded], [0, 100, 200])


class TraversalTest(SmokeRun):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = with_dead_dimension(msdr.load(cls.vae), 0)
    cls.x = jax.random.uniform(jax.random.key(1), (2, H, H, 1))
    cls.values = np.linspace(-2.0, 2.0, 4)

  def test_live_dimension_changes_the_image_along_the_row(self):
    for frames in (self.model.traverse_stage1(self.x, 1, self.values),
                   self.model.traverse(self.x, 1, self.values)):
      frames = np.asarray(frames)
      self.assertEqual(frames.shape, (4, 2, H, H, 1))
      steps = np.abs(np.diff(frames, axis=0)).max(axis=(2, 3, 4))
      self.assertTrue(np.all(steps > 1e-4), steps)

  def test_dead_dimension_gives_a_constant_row(self):
    for frames in (self.model.traverse_stage1(self.x, 0, self.values),
                   self.model.traverse(self.x, 0, self.values)):
      frames = np.asarray(frames)
      np.testing.assert_array_equal(frames, np.broadcast_to(frames[:1],
                                                            frames.shape))

  def test_traverse_keeps_the_other_codes_and_z(self):
    # Sweeping dim 1 through its own encoded value gives the reconstruction.
    c = np.asarray(self.model.encode(self.x))
    frames = self.model.traverse(self.x, 1, [c[0, 1]])
    np.testing.assert_allclose(frames[0, 0], self.model.reconstruct(
        self.x)[0], atol=1e-5)

  def test_traversal_figures_have_the_layout_size_and_frames(self):
    frames = np.stack([np.asarray(self.model.traverse(self.x, d, self.values))
                       for d in (1, 0)])  # [K=2, V=4, B=2, H, W, 1]
    png, gif = report.traversal_figures(frames, ['live', 'dead'], 't', 'cap')
    self.assertEqual((png.name, gif.name), ('t.png', 't.gif'))
    # Per image a block of V columns, blocks one blank column apart.
    self.assertEqual(png_size(png.data), grid_size(2, 2 * 4 + 1, 1))
    decoded = gif_frames(gif.data)
    self.assertLen(decoded, 4)
    self.assertEqual(decoded[0].shape[:2], grid_size(2, 2, 1))
    rows = grid_size(1, 2, 1)[0] - PAD  # pixels of the first (live) row
    for a, b in zip(decoded, decoded[1:]):
      self.assertGreater(np.abs(a[:rows] - b[:rows]).max(), 0)
      np.testing.assert_array_equal(a[rows:], b[rows:])  # the dead row

  def test_bad_dimension(self):
    with self.assertRaisesRegex(UserInputError, 'dim must be in'):
      self.model.traverse_stage1(self.x, 10, self.values)


class NumbersTest(absltest.TestCase):

  def test_mutual_information_against_a_hand_count(self):
    # Code 0 copies factor 0; code 1 is independent of both factors;
    # factor 1 is constant.
    codes = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
    factors = np.array([[0, 5], [0, 5], [1, 5], [1, 5]])
    mi = report.mutual_information(codes, factors)
    np.testing.assert_allclose(mi, [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    # Factor (0, 0, 1, 1, 2, 2) against code (0, 0, 1, 1, 1, 1):
    # MI = H(code) = log 3 - (2/3) log 2 of H(factor) = log 3.
    codes = np.array([[0., 0.], [0., 0.], [1., 0.], [1., 0.], [1., 0.],
                      [1., 0.]])
    codes[:, 1] = [0, 1, 0, 1, 0, 1]
    factors = np.array([[0], [0], [1], [1], [2], [2]])
    expected = (math.log(3) - 2 / 3 * math.log(2)) / math.log(3)
    np.testing.assert_allclose(report.mutual_information(codes, factors)[0, 0],
                               expected, rtol=1e-5)

  def test_curves_keep_the_last_record_of_a_step(self):
    records = [{'stage': 's', 'step': 10, 'loss': 3.0, 'steps_per_second': 1},
               {'stage': 's', 'step': 20, 'loss': 2.0},
               {'stage': 's', 'step': 20, 'loss': 1.5},  # after a resume
               {'stage': 't', 'step': 5, 'kl': 'nan'}]
    curves = plots.curves(records)
    self.assertEqual(sorted(curves), ['s', 't'])
    self.assertEqual(list(curves['s']), ['loss'])
    np.testing.assert_array_equal(curves['s']['loss'][0], [10, 20])
    np.testing.assert_array_equal(curves['s']['loss'][1], [3.0, 1.5])
    self.assertTrue(np.isnan(curves['t']['kl'][1][0]))

  def test_traversal_values(self):
    means = np.array([[-1.0, 0.0], [3.0, 0.5]])
    opts = dict(options.REPORT_DEFAULTS, num_values=3)
    np.testing.assert_allclose(report.traversal_values(means, opts),
                               [[-2, 0, 2], [-2, 0, 2]])
    opts['traversal'] = 'posterior'
    np.testing.assert_allclose(report.traversal_values(means, opts),
                               [[-1, 1, 3], [0, 0.25, 0.5]])

  def test_bad_report_options(self):
    for field, value, message in (('num_values', 1, 'at least 2'),
                                  ('num_images', 0, 'positive int'),
                                  ('traversal', 'wide', 'one of'),
                                  ('traversal_range', -1.0, 'positive')):
      config = common.base_config('dsprites', 'beta_vae', 'smoke')
      config.report[field] = value
      with self.assertRaisesRegex(UserInputError, message):
        options.report_options(config)


class SmokeRunReportTest(SmokeRun):
  """The report the smoke run wrote, and the CLI's report / compare modes."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with open(os.path.join(cls.vae, 'eval.json')) as f:
      cls.scores = json.load(f)

  def test_the_one_command_trains_evaluates_and_reports(self):
    self.assertIn(f'results: {self.vae}', self.cli_stdout)
    self.assertEqual(self.cli_stdout.strip().splitlines()[-1],
                     f'report: {self.vae}/report.html')
    self.assertEqual(self.scores['step.stage1'], 20)
    self.assertEqual(self.scores['step.stage2'], 20)
    for key in ('disentanglement.mig', 'disentanglement.dci_disentanglement',
                'reconstruction.stage1.mse', 'reconstruction.multistage.mse',
                'reconstruction.multistage.psnr',
                'reconstruction.multistage.ssim',
                'reconstruction.multistage.bce', 'samples.multistage.frechet',
                'samples.stage1.frechet'):
      self.assertIn(key, self.scores)
    self.assertIn('random_conv', self.scores['samples.feature_network'])
    for name in ('stage1', 'stage2'):
      self.assertTrue(os.path.isdir(
          os.path.join(self.vae, 'checkpoints', name)))

  def read(self, name, mode='rb'):
    with open(os.path.join(self.vae, name), mode) as f:
      return f.read()

  def test_every_file_is_written_with_the_expected_grid_size(self):
    opts = self.config.report
    k = self.config.stage1.latent_dim
    v, b = opts.num_values, opts.num_images
    for stage in ('stage1', 'multistage'):
      self.assertEqual(png_size(self.read(f'traversals_{stage}.png')),
                       grid_size(k, b * (v + 1) - 1, 1))
      frames = gif_frames(self.read(f'traversals_{stage}.gif'))
      self.assertBetween(len(frames), 2, v)  # equal neighbours are merged
      self.assertEqual(frames[0].shape[:2], grid_size(k, b, 1))
    self.assertEqual(png_size(self.read('reconstructions.png')),
                     grid_size(3, opts.num_reconstructions, grid.ZOOM))
    self.assertEqual(png_size(self.read('samples.png')),
                     grid_size(2, opts.num_samples, grid.ZOOM))
    for name in ('mi_matrix.png', 'kl_per_dim.png', 'training_curves.png'):
      self.assertGreater(min(png_size(self.read(name))), 100, name)

  def test_report_html_has_every_figure_and_every_score(self):
    page = self.read('report.html', 'r')
    for name in report.FIGURES:
      data = self.read(name)
      mime = 'gif' if name.endswith('.gif') else 'png'
      self.assertIn(f'alt="{name}" src="data:image/{mime};base64,'
                    f'{base64.b64encode(data).decode()}"', page)
    self.assertNotIn('src="http', page)  # self-contained
    for key, value in self.scores.items():
      self.assertIn(pages.fmt(value), page, key)
      self.assertIn(key.split('.')[-1], page, key)
    markdown = self.read('report.md', 'r')
    for name in report.FIGURES:
      self.assertIn(f']({name})', markdown)
    self.assertIn(pages.fmt(self.scores['disentanglement.mig']), markdown)

  def test_rendering_again_gives_the_same_figures(self):
    rendered = report.render(self.vae)
    self.assertEqual([f.name for f in rendered.figures], list(report.FIGURES))
    for figure in rendered.figures:
      self.assertEqual(figure.data, self.read(figure.name), figure.name)

  def test_tensorboard_has_the_figures_as_images(self):
    logdir = os.path.join(self.vae, 'tensorboard', 'report')
    (events,) = os.listdir(logdir)
    with open(os.path.join(logdir, events), 'rb') as f:
      data = f.read()
    for name in report.FIGURES:
      if name.endswith('.png'):
        self.assertIn(f'report/{name[:-4]}'.encode(), data)
    self.assertIn(self.read('samples.png'), data)

  def test_report_without_stage2_or_eval_shows_stage1_only(self):
    config = common.base_config('dsprites', 'beta_tcvae', 'smoke')
    rendered = report.render(self.vae, config)  # the same stage 1, no stage 2
    names = [f.name for f in rendered.figures]
    self.assertNotIn('traversals_multistage.png', names)
    self.assertIn('traversals_stage1.gif', names)
    self.assertEqual(png_size(dict(zip(names, rendered.figures))[
        'reconstructions.png'].data), grid_size(2, 4, grid.ZOOM))

  def test_cli_report_and_compare(self):
    proc = run_cli('--mode=report', f'--workdir={self.gmm}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f'report: {self.gmm}/report.html', proc.stdout)
    page = open(os.path.join(self.gmm, 'report.html')).read()
    self.assertIn('ms_gmm', page)
    out = os.path.join(self.root, 'compare')
    proc = run_cli('--mode=compare', f'--workdirs={self.vae},{self.gmm}',
                   f'--workdir={out}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    page = open(os.path.join(out, 'compare.html')).read()
    for label in ('vae', 'gmm', 'ms_vae', 'ms_gmm'):
      self.assertIn(label, page)
    self.assertLen(re.findall(r'alt="reconstructions.png"', page), 2)
    with open(os.path.join(out, 'compare.json')) as f:
      scores = json.load(f)
    self.assertEqual(scores, {'vae': self.scores, 'gmm': {}})  # gmm: no eval
    for key, value in self.scores.items():
      self.assertIn(f'<td>{key}</td><td>{pages.fmt(value)}</td><td>-</td>',
                    page)
    markdown = open(os.path.join(out, 'compare.md')).read()
    figures = re.findall(r'\]\((compare/[^)]+)\)', markdown)
    self.assertLen(figures, 2 * len(report.FIGURES))
    for figure in figures:
      self.assertTrue(os.path.exists(os.path.join(out, figure)), figure)

  def test_errors(self):
    with self.assertRaisesRegex(UserInputError, 'at least two workdirs'):
      report.compare([self.vae], self.root)
    with self.assertRaisesRegex(UserInputError, 'not a directory'):
      report.compare([self.vae, self.root + '/missing'], self.root)
    with self.assertRaisesRegex(UserInputError, 'no config.json'):
      report.write_report(self.root)
    proc = run_cli('--mode=report', f'--workdir={self.root}/missing')
    self.assertEqual(proc.returncode, 2)
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     f'error: {self.root}/missing is not a directory')


if __name__ == '__main__':
  absltest.main()
