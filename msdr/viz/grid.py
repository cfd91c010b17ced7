"""Image grids: tiled, optionally row-labelled, saved as PNG or GIF.

PIL only (no display). Images are float [..., H, W, C] in [0, 1] with C = 1
or 3; grids are uint8 [h, w, C]. Sizes are exact, so a test (or a reader)
can tell the layout from the file: a grid of R x C images of H x W with
padding p and zoom z is z * (R * (H + p) + p) pixels high and
z * (C * (W + p) + p) (+ LABEL_WIDTH when rows are labelled) wide.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

LABEL_WIDTH = 96  # pixels of the row-label strip (after zoom)
ZOOM = 2


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


def table_grid(images, pad: int = 1) -> np.ndarray:
  """Images [R, C, H, W, ch] -> uint8 grid with R rows and C columns."""
  images = np.asarray(images)
  rows, columns = images.shape[:2]
  return image_grid(images.reshape((rows * columns,) + images.shape[2:]),
                    columns, pad)


def enlarge(grid: np.ndarray, factor: int = ZOOM) -> np.ndarray:
  """Enlarges a uint8 grid `factor` times without smoothing."""
  return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)


def label_rows(grid: np.ndarray, labels, row_height: int,
               top: int = 0) -> np.ndarray:
  """Prepends a white LABEL_WIDTH strip with labels[i] at row i's middle.

  Args:
    grid: uint8 [h, w, C] (already zoomed).
    labels: one string per row.
    row_height: pixels from one row's top to the next one's.
    top: pixels above the first row.

  Returns:
    uint8 [h, LABEL_WIDTH + w, C].
  """
  strip = Image.new('L', (LABEL_WIDTH, grid.shape[0]), 255)
  draw = ImageDraw.Draw(strip)
  font = ImageFont.load_default()
  for i, label in enumerate(labels):
    _, y0, _, y1 = draw.textbbox((0, 0), str(label), font=font)
    middle = top + i * row_height + row_height // 2
    draw.text((4, middle - (y0 + y1) // 2), str(label), fill=0, font=font)
  strip = np.asarray(strip)[..., None].repeat(grid.shape[2], axis=2)
  return np.concatenate([strip, grid], axis=1)


def labelled_grid(images, labels=None, pad: int = 1,
                  factor: int = ZOOM) -> np.ndarray:
  """Images [R, C, H, W, ch] -> zoomed uint8 grid, rows labelled if given."""
  grid = enlarge(table_grid(images, pad), factor)
  if labels is None:
    return grid
  height = np.asarray(images).shape[2]
  return label_rows(grid, labels, factor * (height + pad), factor * pad)


def _image(grid: np.ndarray) -> Image.Image:
  return Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)


def png_bytes(grid: np.ndarray) -> bytes:
  """A uint8 [h, w, C] grid encoded as PNG (deterministic bytes)."""
  out = io.BytesIO()
  _image(grid).save(out, format='PNG')
  return out.getvalue()


def gif_bytes(frames, duration_ms: int = 200) -> bytes:
  """uint8 [h, w, C] frames as a looping GIF (consecutive equal frames
  are merged by PIL's encoder)."""
  images = [_image(f) for f in frames]
  if images[0].mode == 'RGB':
    images = [im.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                          dither=Image.Dither.NONE) for im in images]
  out = io.BytesIO()
  images[0].save(out, format='GIF', save_all=True,
                 append_images=images[1:], duration=duration_ms, loop=0)
  return out.getvalue()


def save_png(grid: np.ndarray, path: str, zoom: int = ZOOM) -> None:
  """Writes a uint8 [h, w, C] grid, enlarged `zoom` times without smoothing."""
  with open(path, 'wb') as f:
    f.write(png_bytes(enlarge(grid, zoom) if zoom > 1 else grid))
