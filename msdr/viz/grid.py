"""Image grids saved as PNG (PIL only, no display)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def image_grid(images, columns: int, pad: int = 1) -> np.ndarray:
  """Tiles float images [n, H, W, C] in [0, 1] into one uint8 [h, w, C] grid."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c),
                 np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = image
  return np.round(grid * 255).astype(np.uint8)


def save_png(grid: np.ndarray, path: str, zoom: int = 2) -> None:
  """Writes a uint8 [h, w, C] grid, enlarged `zoom` times without smoothing."""
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  if zoom > 1:
    image = image.resize((image.width * zoom, image.height * zoom),
                         Image.NEAREST)
  image.save(path)
