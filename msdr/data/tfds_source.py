"""Real datasets from tensorflow-datasets, read without TensorFlow.

`get_dataset('tfds:NAME')` opens a dataset that the user has prepared in
ArrayRecord format in their TFDS data dir, through `tfds.data_source` (random
access, no TensorFlow at read time). Nothing is ever downloaded: missing data
raises one `UserInputError` that names the command preparing it.

Datasets with a full factor grid (dsprites, shapes3d, smallnorb) build a
factor -> record lookup from their labels on first use, so the interventional
metrics can call `observations_from_factors`. Building it reads every record
once; it is cached on disk under $MSDR_CACHE_DIR (default ~/.cache/msdr).
Lookups and image decoding run on the host: `jittable` is False.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Callable

import jax
import numpy as np
from PIL import Image

from msdr.data import base
from msdr.data import dsprites
from msdr.data import shapes3d
from msdr.errors import UserInputError

OUTPUT_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Spec:
  """How to read one tfds dataset as a ground-truth dataset."""
  tfds_name: str
  factor_names: tuple[str, ...]
  label_keys: tuple[str, ...]           # feature holding each factor's index
  factor_values: tuple[np.ndarray, ...]
  full_grid: bool = True                # every factor combination exists
  binary: bool = False                  # stored as 0/1 (any non-zero is on)
  crop: int | None = None               # central square crop before resizing
  split: str = 'train'


def _label(feature_path: str) -> Callable[[dict], int]:
  def read(example):
    value = example
    for part in feature_path.split('/'):
      value = value[part]
    return int(value)
  return read


_CELEBA_ATTRIBUTES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick', 'Wearing_Necklace',
    'Wearing_Necktie', 'Young')

SPECS: dict[str, Spec] = {
    'dsprites': Spec(
        'dsprites', dsprites.DSprites.factor_names,
        ('label_shape', 'label_scale', 'label_orientation', 'label_x_position',
         'label_y_position'),
        dsprites.DSprites.factor_values, binary=True),
    'shapes3d': Spec(
        'shapes3d', shapes3d.Shapes3D.factor_names,
        tuple('label_' + n for n in shapes3d.Shapes3D.factor_names),
        shapes3d.Shapes3D.factor_values),
    'smallnorb': Spec(  # the toy instance is nuisance, as in disentanglement_lib
        'smallnorb', ('category', 'elevation', 'azimuth', 'lighting'),
        ('label_category', 'label_elevation', 'label_azimuth',
         'label_lighting'),
        (np.arange(5, dtype=np.float32),
         np.arange(30, 75, 5, dtype=np.float32),
         np.arange(0, 360, 20, dtype=np.float32),
         np.arange(6, dtype=np.float32))),
    'celeb_a': Spec(
        'celeb_a', _CELEBA_ATTRIBUTES,
        tuple('attributes/' + a for a in _CELEBA_ATTRIBUTES),
        tuple(np.arange(2, dtype=np.float32) for _ in _CELEBA_ATTRIBUTES),
        full_grid=False, crop=148),
}


def names() -> list[str]:
  return sorted(SPECS)


def prepare_command(tfds_name: str, data_dir: str | None) -> str:
  where = f' --data_dir={data_dir}' if data_dir else ''
  return (f"pip install -e '.[tfds-build]' && tfds build {tfds_name}"
          f'{where} --file_format=array_record')


def load(name: str, data_dir: str | None = None,
         split: str | None = None,
         image_size: int = OUTPUT_SIZE) -> 'TfdsDataset':
  """Opens the prepared tfds dataset `name` (without the 'tfds:' prefix),
  its images resized to `image_size` (64, or 128 for a high-resolution
  stage 2)."""
  if image_size not in (OUTPUT_SIZE, 2 * OUTPUT_SIZE):
    raise UserInputError(f'image_size must be 64 or 128; got {image_size!r}')
  if name not in SPECS:
    raise UserInputError(
        f'unknown tfds dataset {name!r}; valid: '
        f'{", ".join("tfds:" + n for n in names())}.')
  spec = SPECS[name]
  split = split or spec.split
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir,
                              download=False)
    size = len(source)
  except Exception as e:  # tfds raises many types for missing data.
    raise UserInputError(
        f'dataset tfds:{name} (split {split!r}) is not prepared in ArrayRecord '
        f'format in {data_dir or "the default TFDS data dir"}. Prepare it '
        f'with: {prepare_command(spec.tfds_name, data_dir)}  '
        f'[tfds said: {type(e).__name__}: {str(e).splitlines()[0][:200]}]'
    ) from None
  if size == 0:
    raise UserInputError(f'dataset tfds:{name} split {split!r} is empty.')
  return TfdsDataset(name, spec, source, split, image_size)


class TfdsDataset(base.GroundTruthDataset):
  """A prepared tfds dataset behind the ground-truth dataset contract."""

  jittable = False

  def __init__(self, name: str, spec: Spec, source, split: str,
               image_size: int = OUTPUT_SIZE):
    self.image_size = image_size
    self.name = 'tfds:' + name
    self.spec = spec
    self.source = source
    self.split = split
    self.factor_names = spec.factor_names
    self.factor_values = spec.factor_values
    self.has_nuisance = name == 'smallnorb'
    image = np.asarray(source[0]['image'])
    channels = image.shape[-1] if image.ndim == 3 else 1
    self.observation_shape = (image_size, image_size, channels)
    self._readers = tuple(_label(k) for k in spec.label_keys)
    self._lookup = None

  @property
  def num_examples(self) -> int:
    return len(self.source)

  # -- records -----------------------------------------------------------------

  def _image(self, example) -> np.ndarray:
    image = np.asarray(example['image'])
    if image.ndim == 2:
      image = image[..., None]
    if self.spec.crop:
      h, w = image.shape[:2]
      c = min(self.spec.crop, h, w)
      top, left = (h - c) // 2, (w - c) // 2
      image = image[top:top + c, left:left + c]
    size = self.image_size
    if image.shape[:2] != (size, size):
      pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
      pil = pil.resize((size, size), Image.BILINEAR)
      image = np.asarray(pil).reshape(size, size, -1)
    if self.spec.binary:
      return (image > 0).astype(np.float32)
    return image.astype(np.float32) * (1.0 / 255.0)

  def get_examples(self, indices) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 [n, S, S, C] in [0, 1] (S = image_size) and factors
    int32 [n, F]."""
    examples = [self.source[int(i)] for i in np.asarray(indices).reshape(-1)]
    images = np.stack([self._image(e) for e in examples]) if examples else (
        np.zeros((0,) + self.observation_shape, np.float32))
    factors = np.array([[r(e) for r in self._readers] for e in examples],
                       np.int32).reshape(len(examples), self.num_factors)
    return images, factors

  def sample(self, key: jax.Array, n: int):
    """Random records (with replacement): (images, factors), on the host."""
    n = base._check_count(n, self.name)  # pylint: disable=protected-access
    indices = np.asarray(jax.random.randint(key, (n,), 0, self.num_examples))
    return self.get_examples(indices)

  def sample_factors(self, key: jax.Array, n: int) -> jax.Array:
    self._require_grid()
    return super().sample_factors(key, n)

  # -- factor lookup -------------------------------------------------------------

  def _require_grid(self):
    if not self.spec.full_grid:
      raise UserInputError(
          f'{self.name} has no full factor grid (its labels are attributes), '
          'so factors cannot be sampled or rendered; use sample(key, n).')

  def _render(self, factors, key):
    self._require_grid()
    order, cells = self.lookup()
    flat = self.factors_to_index(np.asarray(factors))
    start = np.searchsorted(cells, flat, side='left')
    stop = np.searchsorted(cells, flat, side='right')
    missing = np.flatnonzero(stop == start)
    if missing.size:
      bad = np.asarray(factors)[missing[0]].tolist()
      raise UserInputError(
          f'{self.name} split {self.split!r} has no record with factors {bad} '
          f'({missing.size} of {len(flat)} requested combinations missing).')
    # Several records per grid point (smallnorb's instances): pick one.
    if key is None:
      pick = np.zeros(len(flat), np.int64)
    else:
      u = np.asarray(jax.random.uniform(key, (len(flat),)))
      pick = np.floor(u * (stop - start)).astype(np.int64)
    return self.get_examples(order[start + pick])[0]

  def lookup(self) -> tuple[np.ndarray, np.ndarray]:
    """(record order, sorted flat factor index of each record in that order)."""
    if self._lookup is None:
      self._lookup = self._load_or_build_lookup()
    return self._lookup

  def _load_or_build_lookup(self):
    cache_dir = os.environ.get('MSDR_CACHE_DIR',
                               os.path.expanduser('~/.cache/msdr'))
    tag = hashlib.sha1(repr((self.name, self.split, self.num_examples,
                             self.spec.label_keys)).encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, f'lookup-{self.name[5:]}-{tag}.npz')
    if os.path.exists(path):
      with np.load(path) as cached:
        return cached['order'], cached['cells']
    labels = np.array(
        [[r(self.source[i]) for r in self._readers]
         for i in range(self.num_examples)], np.int64)
    flat = self.factors_to_index(labels)
    order = np.argsort(flat, kind='stable')
    result = (order, flat[order])
    try:
      os.makedirs(cache_dir, exist_ok=True)
      tmp = path + '.tmp.npz'
      np.savez(tmp, order=result[0], cells=result[1])
      os.replace(tmp, path)
    except OSError:
      pass  # a read-only cache only costs the rebuild next time
    return result
