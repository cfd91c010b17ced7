"""Run logs without TensorFlow: JSON lines, TensorBoard events, progress.

`MetricLogger` (process 0 only) appends one JSON object per logged step to
`<workdir>/metrics.jsonl` and the same scalars to a TensorBoard event file in
`<workdir>/tensorboard/<stage>/`. The event file is written here directly
(TFRecord framing of `Event` protocol buffers with scalar summaries), so
TensorBoard reads it and no TensorFlow, tensorboard or tensorboardX package is
needed to write it. On a terminal a tqdm bar shows steps/s and ETA; in logs
(no terminal) a line is printed at every logged step instead.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import sys
import time

import jax
import tqdm


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited protobuf field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _image_proto(png: bytes, height: int, width: int, channels: int) -> bytes:
  """Summary.Image: height, width, colorspace (1 grey, 3 RGB), encoded."""
  return (b'\x08' + _varint(height) + b'\x10' + _varint(width) + b'\x18'
          + _varint(channels) + _field(4, png))


def encode_event(wall_time: float, step: int | None = None,
                 scalars: dict | None = None,
                 file_version: str | None = None,
                 images: dict | None = None) -> bytes:
  """A serialized tensorflow `Event` proto (only the fields used here).

  `images` maps a tag to (encoded PNG/GIF bytes, height, width, channels).
  """
  out = b'\x09' + struct.pack('<d', wall_time)  # 1: wall_time (double)
  if step is not None:
    out += b'\x10' + _varint(step)  # 2: step (int64)
  if file_version is not None:
    out += _field(3, file_version.encode())
  # Summary.value (1): tag (1), then simple_value (2) or image (4).
  values = b''.join(
      _field(1, _field(1, tag.encode()) + b'\x15' + struct.pack('<f', v))
      for tag, v in (scalars or {}).items())
  values += b''.join(_field(1, _field(1, tag.encode())
                            + _field(4, _image_proto(*image)))
                     for tag, image in (images or {}).items())
  if values:
    out += _field(5, values)
  return out


def tfrecord(data: bytes) -> bytes:
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', _masked_crc(length)) + data
          + struct.pack('<I', _masked_crc(data)))


class EventWriter:
  """Appends scalar and image summaries to a TensorBoard event file."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, 'ab')
    self._file.write(tfrecord(encode_event(time.time(),
                                           file_version='brain.Event:2')))

  def scalars(self, step: int, values: dict) -> None:
    self._file.write(tfrecord(encode_event(time.time(), step, values)))
    self._file.flush()

  def images(self, step: int, images: dict) -> None:
    """Image summaries: {tag: (encoded bytes, height, width, channels)}."""
    self._file.write(tfrecord(encode_event(time.time(), step,
                                           images=images)))
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricLogger:
  """metrics.jsonl + TensorBoard + progress for one stage of a run.

  Args:
    workdir: the run's directory.
    stage: 'stage1', 'stage2', ... (a field of every JSON line).
    total_steps: the stage's last step (for the ETA).
    start_step: where this process starts (after a resume).
  """

  def __init__(self, workdir: str, stage: str, total_steps: int,
               start_step: int = 0):
    self.stage = stage
    self.primary = jax.process_index() == 0
    self._bar = None
    self._events = None
    self._jsonl = None
    if not self.primary:
      return
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    self._events = EventWriter(os.path.join(workdir, 'tensorboard', stage))
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, desc=stage,
                            unit='step', dynamic_ncols=True)

  def advance(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def write(self, step: int, scalars: dict) -> None:
    """Logs the scalars of `step` (plain floats) everywhere."""
    if not self.primary:
      return
    record = {'stage': self.stage, 'step': int(step)}
    record.update({k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                   for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    self._events.scalars(int(step), {f'{self.stage}/{k}': float(v)
                                     for k, v in scalars.items()})
    shown = ('loss' if 'loss' in scalars else 'objective', 'mse',
             'steps_per_second')
    short = {k: scalars[k] for k in shown if k in scalars}
    if self._bar is not None:
      self._bar.set_postfix({k: f'{v:.4g}' for k, v in short.items()})
    else:
      text = ' '.join(f'{k}={v:.4g}' for k, v in short.items())
      print(f'{self.stage} step {step}: {text}', flush=True)

  def close(self) -> None:
    for handle in (self._bar, self._events, self._jsonl):
      if handle is not None:
        handle.close()
