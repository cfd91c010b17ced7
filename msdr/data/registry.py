"""Dataset names -> dataset objects."""

from __future__ import annotations

from typing import Callable

from msdr.data import base
from msdr.data import dsprites
from msdr.data import shapes3d
from msdr.errors import UserInputError

_PROCEDURAL: dict[str, Callable[[], base.GroundTruthDataset]] = {
    'dsprites': dsprites.DSprites,
    'shapes3d': shapes3d.Shapes3D,
    'shapes3d_detail': shapes3d.Shapes3DDetail,
}
TFDS_PREFIX = 'tfds:'


def list_datasets() -> list[str]:
  """Every valid dataset name."""
  from msdr.data import tfds_source  # pylint: disable=g-import-not-at-top
  return sorted(_PROCEDURAL) + [TFDS_PREFIX + n for n in tfds_source.names()]


def get_dataset(name: str, **kwargs) -> base.GroundTruthDataset:
  """Returns the dataset called `name`.

  Args:
    name: a procedural dataset ('dsprites', 'shapes3d', 'shapes3d_detail') or
      'tfds:NAME' for a prepared tensorflow-datasets dataset.
    **kwargs: options of tfds datasets (`data_dir`, `split`).

  Raises:
    UserInputError: unknown name, or tfds data that is not prepared.
  """
  if not isinstance(name, str):
    raise UserInputError(f'dataset name must be a string; got {name!r}.')
  if name.startswith(TFDS_PREFIX):
    from msdr.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.load(name[len(TFDS_PREFIX):], **kwargs)
  if name not in _PROCEDURAL:
    raise UserInputError(
        f'unknown dataset {name!r}; valid names: {", ".join(list_datasets())}.')
  if kwargs:
    raise UserInputError(
        f'dataset {name!r} takes no options; got {sorted(kwargs)}.')
  return _PROCEDURAL[name]()
