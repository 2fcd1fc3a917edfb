"""Scalar metric writers: JSONL and TensorBoard event files, without TensorFlow.

A TensorBoard event file is a TFRecord stream of `Event` protobufs. For scalars we need only
a handful of fields, so the bytes are written by hand (no tensorflow / tensorboardX dependency):
  record = u64 len | u32 masked_crc32c(len) | data | u32 masked_crc32c(data)
  Event   {1: double wall_time, 2: int64 step, 3: string file_version, 5: Summary summary}
  Summary {1: repeated Value value};  Value {1: string tag, 2: float simple_value}
"""
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Mapping

import numpy as np

# --- CRC32C (Castagnoli), table-driven; records are tiny so pure Python is fine. ---
_CRC_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 two's complement, as protobuf does for negatives
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
  return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def scalar_event(step: int, scalars: Mapping[str, float], wall_time: float) -> bytes:
  """Serialized `Event` with one `Summary.Value(simple_value)` per scalar."""
  values = b''.join(
      _len_field(1, _len_field(1, tag.encode()) + b'\x15' + struct.pack('<f', float(v)))
      for tag, v in scalars.items())
  return (b'\x09' + struct.pack('<d', wall_time) + b'\x10' + _varint(int(step))
          + _len_field(5, values))


def file_version_event(wall_time: float) -> bytes:
  return b'\x09' + struct.pack('<d', wall_time) + _len_field(3, b'brain.Event:2')


def tfrecord(data: bytes) -> bytes:
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', masked_crc32c(length)) + data
          + struct.pack('<I', masked_crc32c(data)))


def read_tfrecords(path: str | os.PathLike) -> list[bytes]:
  """Reads back a TFRecord file, checking both CRCs (for tests and debugging)."""
  raw = Path(path).read_bytes()
  out, pos = [], 0
  while pos < len(raw):
    length_bytes = raw[pos:pos + 8]
    (n,) = struct.unpack('<Q', length_bytes)
    (len_crc,) = struct.unpack('<I', raw[pos + 8:pos + 12])
    data = raw[pos + 12:pos + 12 + n]
    (data_crc,) = struct.unpack('<I', raw[pos + 12 + n:pos + 16 + n])
    if len_crc != masked_crc32c(length_bytes) or data_crc != masked_crc32c(data):
      raise ValueError(f'{path}: corrupt TFRecord at byte {pos}')
    out.append(data)
    pos += 16 + n
  return out


def _scalar(v) -> float | None:
  try:
    v = float(np.asarray(v))
  except (TypeError, ValueError):
    return None
  return v


class TensorBoardWriter:
  """Appends scalar summaries to `logdir/events.out.tfevents.<time>.<host>`."""

  def __init__(self, logdir: str | os.PathLike):
    Path(logdir).mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.path = Path(logdir) / f'events.out.tfevents.{int(now)}.{socket.gethostname()}'
    self._f = open(self.path, 'ab')
    self._f.write(tfrecord(file_version_event(now)))
    self._f.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    vals = {k: s for k, v in scalars.items() if (s := _scalar(v)) is not None}
    self._f.write(tfrecord(scalar_event(step, vals, time.time())))
    self._f.flush()

  def close(self) -> None:
    self._f.close()


class JsonlWriter:
  """Appends one JSON object per call: `{"step": s, "time": t, **scalars}`."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._f = open(self.path, 'a')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    row = {'step': int(step), 'time': time.time()}
    for k, v in scalars.items():
      s = _scalar(v)
      if s is not None:
        row[k] = s if np.isfinite(s) else str(s)  # JSON has no NaN/inf
    self._f.write(json.dumps(row) + '\n')
    self._f.flush()

  def close(self) -> None:
    self._f.close()


class MetricWriter:
  """JSONL (`workdir/metrics.jsonl`) + TensorBoard (`workdir/tensorboard/`); no-op if inactive.

  Pass `active=jax.process_index() == 0` so only one process writes.
  """

  def __init__(self, workdir: str | os.PathLike, active: bool = True):
    self.active = active
    self._writers = []
    if active:
      self._writers = [JsonlWriter(Path(workdir) / 'metrics.jsonl'),
                       TensorBoardWriter(Path(workdir) / 'tensorboard')]

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def close(self) -> None:
    for w in self._writers:
      w.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
