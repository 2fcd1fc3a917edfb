"""Eval metrics and the hand-written TensorBoard / JSONL writers."""
import struct

import numpy as np
import scipy.stats

from aesthetics_jax.train import writers
from aesthetics_jax.train import metrics


def test_metrics_vs_references():
  rng = np.random.default_rng(0)
  n = 50
  true_mean = rng.normal(5.4, 0.8, n)
  pred_mean = true_mean + rng.normal(0, 0.5, n)
  np.testing.assert_allclose(metrics.lcc(pred_mean, true_mean),
                             scipy.stats.pearsonr(pred_mean, true_mean)[0], rtol=1e-10)
  ties = np.round(pred_mean)
  np.testing.assert_allclose(metrics.srcc(ties, true_mean),
                             scipy.stats.spearmanr(ties, true_mean)[0], rtol=1e-10)
  assert np.isnan(metrics.lcc(np.ones(n), true_mean))
  assert metrics.binary_accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
  p = np.full((2, 10), 0.1)
  q = np.eye(10)[[0, 9]]
  ref = np.mean([np.sqrt(np.mean((np.cumsum(p[i]) - np.cumsum(q[i])) ** 2)) for i in range(2)])
  np.testing.assert_allclose(metrics.emd(p, q), ref)


def test_tag_topk_hit_any_true_tag():
  scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],
                     [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],
                     [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
  tags = np.zeros((3, 6))
  tags[0, [3, 1]] = 0.5  # top-1 (index 1) is a true tag
  tags[1, 4] = 1         # rank 5 → top-5 hit only
  # row 2: no tag → excluded
  assert metrics.tag_topk(scores, tags, 1) == 0.5
  assert metrics.tag_topk(scores, tags, 5) == 1.0
  out = metrics.compute(
      {'label_pred': np.array([1, 0, 1]), 'mean_score': np.array([6., 4., 5.5]),
       'distribution': np.full((3, 10), 0.1), 'tag_probs': scores[:, :6]},
      {'label': np.array([1, 1, 1]), 'mean_score': np.array([6.5, 4.5, 5.2]),
       'distribution': np.full((3, 10), 0.1), 'tags': tags})
  assert out['binary_accuracy'] == 2 / 3 and out['majority_rate'] == 1.0
  assert out['emd'] == 0 and out['attribute_top1'] == 0.5 and out['num_test_images'] == 3
  vgg = metrics.compute({'label_pred': np.array([1, 0]), 'p_high': np.array([0.9, 0.2])},
                        {'label': np.array([1, 0]), 'mean_score': np.array([6., 4.])})
  assert abs(vgg['lcc_mean'] - 1.0) < 1e-12 and 'emd' not in vgg


def _parse_fields(buf: bytes) -> list[tuple[int, int, object]]:
  """Minimal protobuf wire-format reader: [(field, wire_type, value)]."""
  out, pos = [], 0
  def varint():
    nonlocal pos
    v = shift = 0
    while True:
      b = buf[pos]; pos += 1
      v |= (b & 0x7F) << shift; shift += 7
      if not b & 0x80:
        return v
  while pos < len(buf):
    key = varint()
    field, wt = key >> 3, key & 7
    if wt == 0:
      out.append((field, wt, varint()))
    elif wt == 1:
      out.append((field, wt, struct.unpack('<d', buf[pos:pos + 8])[0])); pos += 8
    elif wt == 5:
      out.append((field, wt, struct.unpack('<f', buf[pos:pos + 4])[0])); pos += 4
    elif wt == 2:
      n = varint(); out.append((field, wt, buf[pos:pos + n])); pos += n
    else:
      raise AssertionError(f'wire type {wt}')
  return out


def test_crc32c_known_vector():
  assert writers.crc32c(b'123456789') == 0xE3069283
  assert writers.crc32c(b'') == 0


def test_tensorboard_and_jsonl_roundtrip(tmp_path):
  w = writers.MetricWriter(tmp_path)
  w.write_scalars(7, {'train/loss': 0.25, 'eval/acc': np.float32(0.75), 'bad': float('nan')})
  w.write_scalars(300, {'train/loss': 0.125})
  w.close()
  rows = writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in rows] == [7, 300]
  assert rows[0]['train/loss'] == 0.25 and rows[0]['bad'] == 'nan'
  (event_file,) = (tmp_path / 'tensorboard').glob('events.out.tfevents.*')
  records = writers.read_tfrecords(event_file)  # checks both CRCs
  assert len(records) == 3
  first = dict((f, v) for f, _, v in _parse_fields(records[0]))
  assert first[3] == b'brain.Event:2'
  ev = _parse_fields(records[2])
  fields = {f: v for f, _, v in ev}
  assert fields[2] == 300
  (value,) = [v for f, _, v in _parse_fields(fields[5]) if f == 1]
  vf = {f: v for f, _, v in _parse_fields(value)}
  assert vf[1] == b'train/loss' and vf[2] == 0.125
  # Corruption is detected.
  raw = bytearray(event_file.read_bytes()); raw[-6] ^= 1
  event_file.write_bytes(bytes(raw))
  try:
    writers.read_tfrecords(event_file)
    raise AssertionError('corruption not detected')
  except ValueError:
    pass
