"""Stage 2 as a job: frozen stage 1 -> y batches -> trained p(x | y, z).

  from msdr.train import stage2
  model, state = stage2.train_stage2(config, workdir)

Stage 1 comes from `<workdir>/checkpoints/stage1`, or from the finished run
named by `config.stage1.init_from` (its own config.json then defines stage 1
and must name the same dataset). Its parameters are restored once and only
ever read: they are an input of the jitted `y` function, never part of the
stage-2 train state, so no stage-2 update can change them.

Each step's batch is `{'image': x, 'y': y}` with `y = sigmoid(g1(c))` and
`c ~ q(c | x)` drawn afresh from the key of (seed, 'stage2', Y_STREAM, step)
(or `c` = the posterior mean with `stage2.y_from='mean'`). Keys and batches
depend only on (seed, step), so an interrupted stage-2 run resumes exactly.
For a high-resolution stage 2 (`stage2.image_size` = 128 on a tfds dataset),
stage 1 sees the images resized to 64x64 and `y` is resized back up.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from msdr import sharding as sharding_lib
from msdr.data import pipeline as pipeline_lib
from msdr.errors import UserInputError
from msdr.models import losses
from msdr.models import stage2 as stage2_lib
from msdr.train import loop
from msdr.train import stage1 as stage1_job

# Folded into stage 2's init key for the c ~ q(c|x) draws behind y.
Y_STREAM = 0x79  # 'y'
STAGE1_SIZE = 64


def has_stage2(config) -> bool:
  """Whether the run's config names a stage-2 model (older runs have no
  stage2 section)."""
  return bool(config.get('stage2', {}).get('model'))


def stage1_workdir(config, workdir: str) -> str:
  """Where stage 1's checkpoints live for this run."""
  init_from = config.stage1.get('init_from')
  return init_from if init_from else workdir


def stage1_config(config, workdir: str):
  """The config that defines stage 1: this run's, or `init_from`'s."""
  source = stage1_workdir(config, workdir)
  if source == workdir:
    return config
  from msdr.train import run  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(source):
    raise UserInputError(f'stage1.init_from={source!r} is not a directory')
  other = run.load_config(source)
  if other.data.name != config.data.name:
    raise UserInputError(
        f'stage1.init_from={source!r} was trained on {other.data.name!r}, '
        f'this run is on {config.data.name!r}')
  return other


def run_dataset(config, workdir: str):
  """The dataset a run's model is shown and scored on: stage 2's (at its
  image size) for a multi-stage run, else stage 1's."""
  if has_stage2(config):
    return stage1_job.dataset_from_config(config, image_size(config))
  return stage1_job.dataset_from_config(stage1_config(config, workdir))


def restore_stage1(config, workdir: str, mesh):
  """(model, params, step) of the newest stage-1 checkpoint of the run.

  Raises:
    UserInputError: no stage-1 checkpoint where one is needed.
  """
  source = stage1_workdir(config, workdir)
  cfg = stage1_config(config, workdir)
  model, stage, _ = stage1_job.build(cfg, mesh)
  restored = loop.restore_latest(stage, source, cfg.seed, mesh)
  if restored is None:
    raise UserInputError(
        f'{source} has no stage-1 checkpoint; train stage 1 there first')
  state, step = restored
  if source != workdir and step < cfg.stage1.steps:
    print(f'stage2: note: stage 1 in {source} stopped at step {step} of '
          f'{cfg.stage1.steps}', flush=True)
  return model, state['params'], step


def image_size(config) -> int:
  """Side of the images stage 2 models (config.stage2.image_size or 64)."""
  size = config.stage2.get('image_size') or STAGE1_SIZE
  if size not in (STAGE1_SIZE, 2 * STAGE1_SIZE):
    raise UserInputError(f'stage2.image_size must be 64 or 128; got {size!r}')
  return size


def resize(images: jax.Array, side: int) -> jax.Array:
  """Bilinear (antialiased when shrinking) resize of [B, H, W, C] images."""
  if images.shape[1] == side:
    return images
  shape = (images.shape[0], side, side, images.shape[-1])
  return jax.image.resize(images, shape, 'bilinear')


def stage1_image(stage1_model, params1, x: jax.Array, key: jax.Array | None
                 ) -> jax.Array:
  """y = sigmoid(g1(c)) at x's size, c ~ q(c|x) (key None: c = the mean)."""
  mean, logvar = stage1_model.encode(params1, resize(x, STAGE1_SIZE))
  c = mean if key is None else losses.reparameterize(key, mean, logvar)
  return resize(jax.nn.sigmoid(stage1_model.decode(params1, c)), x.shape[1])


def make_model(config):
  """(stage-2 model, dataset at stage 2's image size), validated."""
  stage1_job.check_run_config(config)
  cfg = config.stage2
  if not cfg.get('model'):
    raise UserInputError('this config has no stage 2 (stage2.model is unset)')
  stage1_job.positive_int(cfg.steps, 'stage2.steps')
  dataset = stage1_job.dataset_from_config(config, image_size(config))
  return stage2_lib.from_config(cfg, dataset.observation_shape), dataset


def restore_stage2(config, workdir: str, mesh):
  """(model, params, step) of the newest stage-2 checkpoint of `workdir`."""
  model, dataset = make_model(config)
  stage = loop.Stage(
      name='stage2',
      init=lambda key: model.init(key, dataset.observation_shape),
      loss=None, optimizer=model.optimizer(), batches=None, steps=0,
      batch_size=0)
  restored = loop.restore_latest(stage, workdir, config.seed, mesh)
  if restored is None:
    raise UserInputError(f'{workdir} has no stage-2 checkpoint; train it '
                         'first (--mode=train)')
  state, step = restored
  return model, state['params'], step


def build(config, workdir: str, mesh=None):
  """Validates the stage-2 config, restores stage 1 and builds stage 2.

  Returns:
    (model, stage, stage1_model, stage1_params).
  """
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(
      config.num_devices)
  model, dataset = make_model(config)
  cfg = config.stage2
  sharding_lib.check_batch_size(cfg.batch_size, mesh, 'stage2.batch_size')
  stage1_model, params1, _ = restore_stage1(config, workdir, mesh)

  pipe = pipeline_lib.Pipeline(dataset, cfg.batch_size, config.seed, mesh)
  init_key, _ = loop.stage_keys(config.seed, 'stage2')
  y_key = jax.random.fold_in(init_key, Y_STREAM)
  data = sharding_lib.data_sharding(mesh)
  use_mean = cfg.y_from == 'mean'

  @functools.partial(jax.jit, out_shardings=data)
  def make_y(params1, x, step):
    key = None if use_mean else jax.random.fold_in(y_key, step)
    return stage1_image(stage1_model, params1, x, key)

  def batches(step: int) -> dict:
    x = pipe.batch(step)['image']
    return {'image': x, 'y': make_y(params1, x, jnp.int32(step))}

  def loss(params, batch, key, step):
    return model.loss(params, batch['image'], batch['y'], key, step)

  def update(params, opt_state, batch, key, step):
    return model.update(params, opt_state, batch['image'], batch['y'], key,
                        step)

  stage = loop.Stage(
      name='stage2',
      init=lambda key: model.init(key, dataset.observation_shape),
      loss=loss, optimizer=model.optimizer(), batches=batches,
      steps=cfg.steps, batch_size=cfg.batch_size,
      update=None if model.update is None else update)
  return model, stage, stage1_model, params1


def train_stage2(config, workdir: str, mesh=None):
  """Trains (or resumes) stage 2 in `workdir` on the frozen stage 1.

  Returns:
    (model, state): the stage-2 model and its final train state.
  """
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(
      config.num_devices)
  model, stage, _, _ = build(config, workdir, mesh)
  return model, stage1_job.train_stage(stage, config, workdir, mesh,
                                       model.name)
