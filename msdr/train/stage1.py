"""Stage 1 as a job: config -> validated model, batches -> trained params.

  from msdr.train import stage1
  model, state = stage1.train_stage1(config, workdir)
  mean, logvar = model.encode(state['params'], images)

Every config value is checked (and a clear `UserInputError` raised) before
anything is compiled.
"""

from __future__ import annotations

import jax

from msdr import sharding as sharding_lib
from msdr.data import pipeline as pipeline_lib
from msdr.data import registry
from msdr.errors import UserInputError
from msdr.models import stage1 as stage1_lib
from msdr.train import loop


def positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserInputError(f'{name} must be a positive int; got {value!r}.')
  return value


def check_run_config(config) -> None:
  """Checks the run-level fields every stage uses."""
  positive_int(config.checkpoint_every, 'checkpoint_every')
  positive_int(config.log_every, 'log_every')
  positive_int(config.keep_checkpoints, 'keep_checkpoints')
  if not isinstance(config.seed, int):
    raise UserInputError(f'seed must be an int; got {config.seed!r}.')


def dataset_from_config(config, image_size: int = 64):
  """The dataset named by `config.data`, with images of `image_size`
  (procedural datasets render at 64 only)."""
  kwargs = {}
  if config.data.name.startswith(registry.TFDS_PREFIX):
    kwargs = {'data_dir': config.data.tfds_data_dir,
              'split': config.data.tfds_split}
    if image_size != 64:
      kwargs['image_size'] = image_size
  elif image_size != 64:
    raise UserInputError(
        f'{config.data.name} renders 64x64 images only; a {image_size}x'
        f'{image_size} stage 2 needs a tfds dataset')
  return registry.get_dataset(config.data.name, **kwargs)


def dataset_size(dataset) -> int:
  """N for beta-TCVAE's estimators: records on disk, else the factor grid."""
  return int(getattr(dataset, 'num_examples', None)
             or dataset.num_combinations)


def build(config, mesh=None):
  """Validates `config` and builds stage 1 without compiling anything.

  Returns:
    (model, stage, pipeline): the `Stage1Model`, the `loop.Stage` to train
    and the input pipeline.
  """
  check_run_config(config)
  cfg = config.stage1
  positive_int(cfg.steps, 'stage1.steps')
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(
      config.num_devices)
  sharding_lib.check_batch_size(cfg.batch_size, mesh, 'stage1.batch_size')
  stage1_lib.check_config(cfg)
  dataset = dataset_from_config(config)
  model = stage1_lib.from_config(
      cfg, channels=dataset.observation_shape[-1],
      dataset_size=cfg.dataset_size or dataset_size(dataset))
  pipe = pipeline_lib.Pipeline(dataset, cfg.batch_size, config.seed, mesh)

  def loss(params, batch, key, step):
    return model.loss(params, batch['image'], key, step)

  stage = loop.Stage(
      name='stage1',
      init=lambda key: model.init(key, dataset.observation_shape),
      loss=loss, optimizer=model.optimizer(), batches=pipe.batch,
      steps=cfg.steps, batch_size=cfg.batch_size)
  return model, stage, pipe


def train_stage1(config, workdir: str, mesh=None):
  """Trains (or resumes) stage 1 in `workdir`.

  Returns:
    (model, state): the `Stage1Model` and the final train state; the
    parameters are `state['params']`.
  """
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(
      config.num_devices)
  model, stage, _ = build(config, mesh)
  return model, train_stage(stage, config, workdir, mesh, model.method)


def train_stage(stage: loop.Stage, config, workdir: str, mesh,
                what: str) -> loop.State:
  """Announces `stage` and trains it with the config's run settings."""
  print(f'{stage.name}: {what} on {config.data.name}, batch '
        f'{stage.batch_size} over {mesh.devices.size} '
        f'{jax.devices()[0].platform} device(s), {stage.steps} steps',
        flush=True)
  return loop.train(stage, workdir=workdir, seed=config.seed, mesh=mesh,
                    checkpoint_every=config.checkpoint_every,
                    log_every=config.log_every,
                    keep_checkpoints=config.keep_checkpoints)
