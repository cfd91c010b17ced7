"""Ground-truth datasets by name, and the sharded input pipeline.

  from msdr import data
  ds = data.get_dataset('shapes3d_detail')
  images, factors = ds.sample(jax.random.key(0), 16)

Procedural datasets (rendered in JAX, no download): dsprites, shapes3d,
shapes3d_detail. Prepared tensorflow-datasets: 'tfds:NAME' (see tfds_source).
"""

from msdr.data.base import GroundTruthDataset
from msdr.data.registry import get_dataset, list_datasets

__all__ = ['GroundTruthDataset', 'get_dataset', 'list_datasets']
