"""One self-contained HTML report (figures embedded as base64 PNG) from plain dicts.

Input is deliberately plain data so the report can be rendered from `metrics.json` and PNG
files alone (no JAX): a list of model sections and an optional dataset section.

Model section (dict):
  name: str, arch: 'mobilenet_v2' | 'vgg16', step: int, workdir: str,
  metrics: the `metrics.json` dict written by `evaluation.run.evaluate`,
  figures: {key: PNG bytes | path}; keys used (all optional): `examples_high`,
    `examples_low`, `intensity_scatter_per_image`, `intensity_scatter_global`,
    `bucket_maps`, `bucket_maps_examples`, `score_bucket_maps`, `faithfulness_deletion`,
    `faithfulness_insertion`,
  notes: list[str] shown under the model heading,
  explorer: path of the model's `explorer/index.html` (optional; linked relative to the report).
Dataset section (dict): figures {key: PNG bytes | path} (paper Figures 1-2), stats: dict.
"""
from __future__ import annotations

import base64
import datetime
import html
import os
import posixpath
import re
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, Sequence

from aesthetics_jax import io as io_lib

# The paper's numbers (Chu & Dhuldhoya) and NIMA's (Talebi & Milanfar 2018) on real AVA.
# What the paper's figures come from (Chu & Dhuldhoya; see ../shared/PAPER.md).
PAPER_SOURCE = ('AVA style subset, 2,203 test images, frozen ImageNet encoders, 224 px; '
                'its accuracy is validation accuracy')
PAPER_TABLE1 = {'pearson_all': 0.24, 'pearson_extreme': 0.34, 'split_point_accuracy': 0.497}
PAPER_ACCURACY = {'vgg16': 0.72, 'mobilenet_v2': 0.75}
NIMA = {
    'mobilenet_v2': {'backbone': 'MobileNet', 'binary_accuracy': 0.8036, 'lcc_mean': 0.518,
                     'srcc_mean': 0.510, 'emd': 0.081},
    'vgg16': {'backbone': 'VGG16', 'binary_accuracy': 0.8060, 'lcc_mean': 0.610,
              'srcc_mean': 0.592, 'emd': 0.051},
}
FAITHFULNESS_COLUMNS = (
    ('num_images', 'images'),
    ('deletion_auc', 'deletion AUC (lower = better)'),
    ('insertion_auc', 'insertion AUC (higher = better)'),
    ('randomization_spearman', 'randomised-head Spearman (nearer 0 = better)'),
)
LOCALIZATION_COLUMNS = (
    ('num_defective', 'images with a region'),
    ('pointing_game', 'pointing game, low target'),
    ('margin_over_centre', 'margin over the centre point'),
    ('pointing_game_upsampled', 'pointing game, upsampled map'),
    ('pointing_game_aesthetic_target', 'pointing game, aesthetic target'),
    ('mask_mass', 'mask mass, low target'),
    ('box_iou', 'box IoU, low target'),
    ('same_peak_low_aesthetic', 'low and aesthetic maps peak at one cell'),
)
# The localisation controls (evaluators/localization.py), in a table of their own.
CONTROL_COLUMNS = (
    ('pointing_game', 'pointing game, trained'),
    ('pointing_game_untrained', 'pointing game, untrained model'),
    ('margin_over_untrained', 'margin over the untrained model'),
    ('mask_mass_untrained', 'mask mass, untrained model'),
    ('pointing_game_shuffled_masks', "pointing game, another image's region"),
    ('mask_mass_shuffled_masks', "mask mass, another image's region"),
)
_WITH_CI = ('pointing_game', 'margin_over_centre', 'margin_over_untrained')
DEMO_BANNER = ('These results come from the synthetic DEMO dataset (procedural images with '
               'planted defects, small models trained from scratch), not from AVA. They show '
               'that the pipeline works; they are not comparable to the paper\'s numbers.')

_CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:auto;
padding:1em clamp(.6em,3vw,2em);color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.25em .6em;
text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
h1,h2,nav,p,li,code{overflow-wrap:anywhere}td{white-space:nowrap}
.explorer-link{font-size:1.05em;background:#eef4ff;border:1px solid #9bb8ee;padding:.5em .8em}
.banner{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;font-weight:bold;
margin:1em 0}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.note{color:#555;font-size:.92em}
.missing{color:#a33;font-style:italic}nav a{margin-right:1em}
nav a,bdi,code{unicode-bidi:isolate}
"""


# A file name that is not UTF-8 reaches Python with its odd bytes as lone surrogates
# (surrogateescape), which no UTF-8 page can hold.
_SURROGATES = re.compile('[\ud800-\udfff]')


def text(x: Any) -> str:
  """`str(x)` that a UTF-8 page can hold: a workdir named in another encoding failed the
  report's write (UnicodeEncodeError) after the whole evaluation; its odd bytes show as
  U+FFFD."""
  return _SURROGATES.sub('\ufffd', str(x))


# Bidi embeddings / overrides (closed by PDF) and isolates (closed by PDI).
_EMBEDS, _ISOLATES = '\u202a\u202b\u202d\u202e', '\u2066\u2067\u2068'


def bidi_closed(s: str) -> str:
  """`s` with the bidi overrides, embeddings and isolates it leaves open closed at its end: a
  tag or note holding a lone U+202E (right-to-left override) reversed the page's text after
  it (' · test row 3' read '3 wor tset ·', a tag option's count '(1)' came first)."""
  stack: list[str] = []
  for ch in s:
    if ch in _EMBEDS or ch in _ISOLATES:
      stack.append(ch)
    elif ch == '\u202c' and stack and stack[-1] in _EMBEDS:  # PDF: the innermost embedding
      stack.pop()
    elif ch == '\u2069' and any(c in _ISOLATES for c in stack):  # PDI: up to its isolate
      while stack.pop() not in _ISOLATES:
        pass
  return s + ''.join('\u2069' if c in _ISOLATES else '\u202c' for c in reversed(stack))


def isolated(s: Any) -> str:
  """`s` (a name: a workdir is anything) as page text that cannot reorder what is around it:
  its own overrides closed, the whole in a first-strong isolate (FSI ... PDI). An explorer
  titled 'explorer: <workdir> (arch, step N)' from a workdir holding a lone U+202E read
  ')N pets ,hcra(' after the name."""
  return '\u2068' + bidi_closed(text(s)) + '\u2069'


def _esc(x: Any) -> str:
  return html.escape(text(x))


def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
  if v is None:
    return '—'
  if isinstance(v, float) and v != v:  # NaN
    return 'n/a'
  if isinstance(v, (int,)) and not isinstance(v, bool):
    return str(v)
  if isinstance(v, (float,)) or hasattr(v, '__float__'):
    v = float(v)
    return f'{100 * v:.1f}%' if pct else f'{v:.{digits}f}'
  return _esc(v)


def _ci(m: Mapping, key: str, pct: bool = False) -> str:
  ci = m.get(key + '_ci')
  if not ci or len(ci) != 2 or ci[0] is None:
    return ''
  return f' <span class="note">[{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]</span>'


def embed_png(fig: bytes | str | os.PathLike | None, alt: str) -> str:
  """`<img>` tag with the PNG inlined as base64; a visible note if the figure is missing."""
  if fig is None:
    return f'<p class="missing">({_esc(alt)}: not available)</p>'
  if not isinstance(fig, (bytes, bytearray)):
    p = Path(fig)
    if not p.is_file():
      return f'<p class="missing">({_esc(alt)}: {_esc(p)} not found)</p>'
    fig = p.read_bytes()
  b64 = base64.b64encode(bytes(fig)).decode('ascii')
  return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


def _table(rows: Sequence[str]) -> str:
  """A table that scrolls sideways inside its own box on a narrow screen (the page never
  does)."""
  return '<div class="scroll"><table>' + ''.join(rows) + '</table></div>'


def _accuracy_table(models: Sequence[Mapping], demo: bool = False) -> str:
  other = ' (real AVA; not comparable with this demo)' if demo else ''
  rows = ['<tr><th>model</th><th>n test</th><th>binary accuracy</th><th>majority rate</th>'
          '<th>LCC</th><th>SRCC</th><th>EMD</th><th>attribute top-1 / top-5</th>'
          f'<th>paper accuracy{other}</th><th>NIMA acc / LCC / SRCC / EMD{other}</th></tr>']
  for s in models:
    m, arch = s['metrics'], s.get('arch', '')
    nima = NIMA.get(arch)
    nima_s = (f'{nima["backbone"]}: {_fmt(nima["binary_accuracy"], True)} / '
              f'{nima["lcc_mean"]:.3f} / {nima["srcc_mean"]:.3f} / {nima["emd"]:.3f}'
              if nima else '—')
    attr = ('—' if m.get('attribute_top1') is None else
            f'{_fmt(m.get("attribute_top1"), True)} / {_fmt(m.get("attribute_top5"), True)}')
    rows.append(
        f'<tr><td>{_esc(s["name"])} ({_esc(arch)})</td><td>{_fmt(m.get("num_test_images"))}</td>'
        f'<td>{_fmt(m.get("binary_accuracy"), True)}{_ci(m, "binary_accuracy", True)}</td>'
        f'<td>{_fmt(m.get("majority_rate"), True)}</td>'
        f'<td>{_fmt(m.get("lcc_mean"))}{_of_p_high(arch)}</td>'
        f'<td>{_fmt(m.get("srcc_mean"))}{_of_p_high(arch)}</td>'
        f'<td>{_fmt(m.get("emd"))}</td><td>{attr}</td>'
        f'<td>{_fmt(PAPER_ACCURACY.get(arch), True)}</td><td>{nima_s}</td></tr>')
  return _table(rows)


def _of_p_high(arch: str) -> str:
  """VGG16 predicts no mean score: its LCC / SRCC correlate p_high with the true mean score,
  which is not NIMA's (predicted mean score) correlation."""
  return ' <span class="note">(of p_high)</span>' if arch == 'vgg16' else ''


def _table1_rows(d: Mapping, m: Mapping, paper: bool) -> list[str]:
  """Table 1's three rows from the study keys in `d` (the metrics, or their
  `intensity_untrained`); counts from the metrics `m`; with the paper's column or without."""
  rows = []
  for key, label, ref, nkey in (
      ('cam_intensity_pearson_all', 'Pearson r, all images', PAPER_TABLE1['pearson_all'],
       'cam_intensity_n_all'),
      ('cam_intensity_pearson_extreme', 'Pearson r, extremes (&lt;4.5 or &gt;6.5)',
       PAPER_TABLE1['pearson_extreme'], 'cam_intensity_n_extreme')):
    cells = ''.join(f'<td>{_fmt(d.get(f"{key}_{n}"))}{_ci(d, f"{key}_{n}")}</td>'
                    for n in ('per_image', 'global'))
    rows.append(f'<tr><td>{label} (n={_fmt(m.get(nkey))})</td>'
                + (f'<td>{ref:.2f}</td>' if paper else '') + cells + '</tr>')
  if any(f'cam_intensity_pearson_low_tail_{n}' in d for n in ('per_image', 'global')):
    # The extremes' r mixes the gap between the two tails with any trend inside them.
    cells = ''.join(
        f'<td>{_fmt(d.get(f"cam_intensity_pearson_low_tail_{n}"))}'
        f'{_ci(d, f"cam_intensity_pearson_low_tail_{n}")} /<br>'
        f'{_fmt(d.get(f"cam_intensity_pearson_high_tail_{n}"))}'
        f'{_ci(d, f"cam_intensity_pearson_high_tail_{n}")}</td>' for n in ('per_image', 'global'))
    rows.append(f'<tr><td>Pearson r within each tail, low / high (n='
                f'{_fmt(m.get("cam_intensity_n_low_tail"))} / '
                f'{_fmt(m.get("cam_intensity_n_high_tail"))})</td>'
                + ('<td>—</td>' if paper else '') + cells + '</tr>')
  cells = ''.join(f'<td>{_split_point_cell(d, n)}</td>' for n in ('per_image', 'global'))
  rows.append(f'<tr><td>split-point classifier accuracy (n={_fmt(m.get("num_test_images"))})'
              '</td>' + (f'<td>{100 * PAPER_TABLE1["split_point_accuracy"]:.1f}%</td>'
                         if paper else '') + cells + '</tr>')
  return rows


def _split_point_cell(d: Mapping, n: str) -> str:
  """Accuracy [CI], and what tells it from the majority class: the threshold (or that the
  fitted rule calls everything one class), the share called high, balanced accuracy, and the
  gain over always answering the majority class [CI]."""
  acc = (f'{_fmt(d.get(f"split_point_accuracy_{n}"), True)}'
         f'{_ci(d, f"split_point_accuracy_{n}", True)}')
  if f'split_point_gain_{n}' not in d:  # metrics from before these keys
    t = _fmt(d.get(f'split_point_threshold_{n}'))
    return f'{acc} <span class="note">(threshold {t})</span>'
  high = d.get(f'split_point_predicted_high_{n}')
  rule = ('<strong>degenerate</strong>: the fitted rule<br>calls every fit image '
          f'{"high" if (high or 0) >= 0.5 else "low"}' if d.get(f'split_point_degenerate_{n}')
          else f'threshold {_fmt(d.get(f"split_point_threshold_{n}"))}')
  gain, ci = d.get(f'split_point_gain_{n}'), d.get(f'split_point_gain_ci_{n}') or [None, None]
  pp = lambda v: '?' if v is None else f'{100 * v:+.1f}'  # noqa: E731
  return (f'{acc}<br><span class="note">{rule}; calls {_fmt(high, True)} high<br>balanced '
          f'accuracy {_fmt(d.get(f"split_point_balanced_accuracy_{n}"))}<br>vs the majority '
          f'class {pp(gain)} pp [{pp(ci[0])}, {pp(ci[1])}]</span>')


def _table1(s: Mapping, demo: bool = False) -> str:
  m = s['metrics']
  u = m.get('intensity_untrained') or {}
  paper = 'paper*' + (' (not comparable with this demo)' if demo else '')
  rows = [f'<tr><th>quantity</th><th>{_esc(paper)}</th><th>ours, per-image normalisation</th>'
          '<th>ours, dataset-global normalisation</th></tr>'] + _table1_rows(m, m, True)
  # The untrained model's study in a table of its own: beside ours it pushed Table 1 past an
  # 800 px page.
  untrained = ('<p><strong>The same study, untrained model</strong></p>' + _table(
      ['<tr><th>quantity</th><th>per-image normalisation</th><th>dataset-global '
       'normalisation</th></tr>'] + _table1_rows(u, m, False)) if u else '')
  fit = m.get('split_point_fit', 'training split maps')
  majority = m.get('majority_rate')
  note = (f'<p class="note">Map method: {_esc(m.get("cam_method", "gradcam"))} on the aesthetic '
          f'target, upsampled to the input size. Per-image normalisation: each map min-max '
          f'scaled to [0,1]; dataset-global: one min/max fitted on the split point\'s training '
          f'maps and applied to the test maps too, which therefore need not span [0, 1] (the '
          f'paper does not say which it used). 95% bootstrap CIs in brackets. The extremes\' r '
          f'mixes the gap between the low and the high tail\'s mean intensity with any trend '
          f'inside them; the within-tail row separates the two. The split-point threshold is '
          f'fitted on {_esc(fit)} and applied to the test split; always answering the majority '
          f'class scores {_fmt(majority, True)} here, so read the split point by its gain over '
          f'that and its balanced accuracy (0.5 for any one-class rule), not by its accuracy '
          f'alone. *Paper: {_esc(PAPER_SOURCE)}. {_untrained_text(m)}</p>')
  if m.get('tiny_maps_warning'):
    note += f'<p class="missing">Caution: {_esc(m["tiny_maps_warning"])}.</p>'
  if len(m.get('cam_layers') or ()) > 1:
    note += f'<p class="missing">Caution: {_esc(FUSED_LAYERS_NOTE)}.</p>'
  return _table(rows) + untrained + note


# Several CAM layers give identical per-image and global columns, which read as a finding.
FUSED_LAYERS_NOTE = ('the maps of several CAM layers are fused as pytorch-grad-cam fuses them, '
                     'each layer\'s map and their mean min-max scaled per image, so the '
                     'dataset-global normalisation repeats the per-image one; for a global '
                     'scale evaluate one layer')


def _untrained_text(m: Mapping) -> str:
  """Table 1's note on its untrained-model table (or why it is missing)."""
  if m.get('intensity_untrained'):
    return ('Untrained model: the same study of the maps of the variables training started '
            'from (seed init, and the ImageNet encoder if one was loaded); an intensity that '
            'tracks the score there comes from the images, not from what the model learned.')
  note = m.get('intensity_untrained_note')
  return f'Untrained model: {_esc(note)}.' if note else ''


def _faithfulness_table(s: Mapping, demo: bool = False) -> str:
  m = s['metrics']
  faith = m.get('faithfulness') or {}
  if not faith:
    return '<p class="missing">(faithfulness checks not run)</p>'
  rand = m.get('faithfulness_random')
  # A baseline that scores at or above the images: the gap that normalises the curves has the
  # wrong sign, which turns each AUC's direction around (a deletion that lowers the score
  # climbs above 1), and resamples whose gap crosses 0 blow the intervals up.
  wrong = [f'{_esc(k)} {_fmt(v.get("baseline_gap"))}'
           for k, v in list(faith.items()) + ([('random order', rand)] if rand else [])
           if v.get('baseline_gap') is not None and v['baseline_gap'] <= 0]
  # Then no header says which way is better (they did, above a Caution saying neither is).
  labels = [l.split(' (')[0] if wrong and k in ('deletion_auc', 'insertion_auc') else l
            for k, l in FAITHFULNESS_COLUMNS]
  rows = ['<tr><th>CAM method</th>' + ''.join(f'<th>{_esc(l)}</th>' for l in labels) + '</tr>']
  for method, vals in list(faith.items()) + ([('random order (chance)', rand)] if rand else []):
    rows.append(f'<tr><td>{_esc(method)}</td>' + ''.join(
        f'<td>{_fmt(vals.get(k))}{_ci_text(vals.get(f"{k}_ci"))}</td>'
        if k in vals or k != 'randomization_spearman' else '<td>—</td>'
        for k, _ in FAITHFULNESS_COLUMNS) + '</tr>')
  gaps = ', '.join(f'{_esc(k)} {_fmt(v.get("baseline_gap"))}' for k, v in faith.items()
                   if v.get('baseline_gap') is not None) or 'n/a'
  note = (f'<p class="note">The first {_fmt(m.get("faithfulness_num_images"))} test images '
          '(ScoreCAM on fewer, as it re-runs the model once per channel). '
          'Deletion: the aesthetic score as the most salient pixels of the aesthetic map are '
          'replaced by a blurred copy first; insertion: as they are revealed on the blurred '
          f'image ({_fmt(m.get("faithfulness_steps"))} steps; AUC of the mean curve normalised '
          'to the image and baseline scores; values outside [0, 1] mean the curve overshoots '
          'the gap between the image and the blurred baseline, which is then too small to '
          f'normalise by: gap {gaps}). 95% bootstrap intervals (images resampled) in brackets: '
          'a method is more faithful than chance only where its interval clears the random '
          'pixel order\'s AUC; methods whose intervals overlap are not ranked by these '
          'images. Randomisation: Spearman rank correlation between aesthetic maps of the '
          'trained and a re-initialised head (a method that depends on the model changes, so '
          'nearer 0 is better; a negative value is as dependent as a positive one of the same '
          'size; EigenCAM ignores the head by design).'
          + (' On the demo data blur is one of the planted defects, so a blurred baseline '
             'lowers the score whichever pixels are replaced: compare with the random order '
             'rather than with 0.5.' if demo and not wrong else '') + '</p>')
  if wrong:
    note += ('<p class="missing">Caution: the blurred baseline scores at or above the images '
             f'themselves (gap {", ".join(wrong)}), so these AUCs are normalised by a gap of '
             'the wrong sign: lower deletion / higher insertion no longer means more faithful '
             '(a deletion that lowers the score gives values above 1), and the intervals are '
             'not meaningful. Neither the methods nor the random order are ranked by them '
             'here.</p>')
  return _table(rows) + note


def _ci_text(ci) -> str:
  if not ci or len(ci) != 2 or ci[0] is None or ci[0] != ci[0]:
    return ''
  return f' <span class="note">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>'


def _interval(value, ci) -> str:
  """`_ci_text`, or a note where a value has no interval (too few images to resample: an
  interval of 2 images read as certain)."""
  shown = _ci_text(ci)
  if shown or not isinstance(value, (int, float)) or value != value or not ci:
    return shown
  return ' <span class="note">(too few images for an interval)</span>'


def _sign(d: Mapping, key: str) -> int:
  """+1 / -1 when the interval of `d[key]` lies above / below 0, else 0."""
  ci = d.get(key + '_ci')
  if not ci or ci[0] is None:
    return 0
  return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def _with_ci(d: Mapping, key: str) -> str:
  ci = d.get(key + '_ci')
  v = d.get(key)
  if v is None:
    return 'n/a'
  return f'{v:+.3f}' + (f' [{ci[0]:+.3f}, {ci[1]:+.3f}]' if ci and ci[0] is not None else '')


def _concentration_verdict(c: Mapping, u: Mapping | None) -> str:
  """What the intervals of `study.map_concentration` say, in words, each claim with its
  interval: the trend with the score, mid-range against the extremes (unless the tails go
  opposite ways, when the pooled contrast means little), the untrained control, and whether
  the entropy tracks the true score beyond the model's prediction. "The paper's reading
  holds" needs each tail more concentrated than mid-range, not only the pooled extremes."""
  word = {1: 'more', -1: 'less'}
  kind = {1: 'more diffuse', -1: 'more concentrated'}
  said = f'Entropy against the true score: Spearman {_with_ci(c, "spearman")}'
  said += (f' (the untrained model\'s maps: {_with_ci(u, "spearman")}).' if u and 'spearman' in u
           else '.')
  lo, hi = _sign(c, 'low_tail_minus_mid'), _sign(c, 'high_tail_minus_mid')
  v = _sign(c, 'mid_minus_extremes')
  if lo and hi and lo != hi:
    said += (f' The tails go opposite ways: low-score maps are {kind[lo]} than mid-range ones '
             f'({_with_ci(c, "low_tail_minus_mid")}), high-score maps {kind[hi]} '
             f'({_with_ci(c, "high_tail_minus_mid")}); the entropy follows the score rather than '
             'peaking at mid-range, so the pooled contrast (mid − extremes '
             f'{_with_ci(c, "mid_minus_extremes")}) mixes two opposite effects and depends on '
             'how many images each tail has: it is not evidence for the paper\'s reading.')
  elif v == 0:
    said += (f' Mid-range images\' maps are not shown to be more or less diffuse than the '
             f'extremes\' (mid − extremes {_with_ci(c, "mid_minus_extremes")} spans 0).')
  else:
    said += (f' Mid-range images\' maps are {word[v]} diffuse than the extremes\' (mid − '
             f'extremes {_with_ci(c, "mid_minus_extremes")}).')
    if 'margin_over_untrained' in c:
      m = _sign(c, 'margin_over_untrained')
      said += (f' Its margin over the untrained model\'s, {_with_ci(c, "margin_over_untrained")}'
               ' (paired by image), ' + ('excludes 0.' if m == v else
                                         'does not: training is not shown to cause it.'))
    elif not u:
      said += ' No untrained control was run.'
  if 'spearman_given_predicted' in c and _sign(c, 'spearman'):  # is the trend the prediction's?
    g = _sign(c, 'spearman_given_predicted')
    said += (' With the predicted score held fixed, Spearman '
             f'{_with_ci(c, "spearman_given_predicted")}: ')
    said += ('the entropy tracks the true score beyond what the model predicts.' if g else
             'the entropy follows what the model predicts (the map of a low prediction has few '
             'positive cells), not the true score beyond it.')
  if v == 1 and not (lo and hi and lo != hi) and _sign(c, 'margin_over_untrained') == 1:
    # The reading is of both extremes: a pooled contrast that one tail carries (the other no
    # different from mid-range) is a trend at one end, not maps diffuse only at mid-range.
    if lo == hi == -1:
      said += ' Together: the paper\'s reading holds here.'
    else:
      tails = [(name, key) for name, key, s in (('low', 'low_tail_minus_mid', lo),
                                                ('high', 'high_tail_minus_mid', hi)) if s != -1]
      said += (' Not both tails, though: ' + ' and '.join(
          f'the {name}-score maps are not shown to be more concentrated than mid-range ones '
          f'({name} − mid {_with_ci(c, key)})' for name, key in tails)
          + ', so the pooled contrast does not show the paper\'s reading (maps concentrated '
          'at both extremes) on its own.')
  return said


def _concentration(m: Mapping) -> str:
  """Figure 8's "diffuse at mid-range scores" as numbers: per-image map entropy by score
  group, trained and untrained (`study.map_concentration`), and what the intervals say."""
  c = m.get('map_concentration')
  if not c:
    return ''
  u = m.get('map_concentration_untrained')

  def cell(g):  # interval and count on lines of their own: six columns fit the page
    g = g if isinstance(g, Mapping) else {}  # a group missing (an edited metrics.json): n/a
    return (f'<td>{_fmt(g.get("mean"))}<br>{_ci_text(g.get("ci"))}'
            f'<br><span class="note">n={_fmt(g.get("n"))}</span></td>')

  rows = ['<tr><th>maps of</th><th>mid-range<br>(4.5 to 6.5)</th><th>low tail<br>(&lt; 4.5)</th>'
          '<th>high tail<br>(&gt; 6.5)</th><th>extremes<br>(both tails)</th>'
          '<th>mid −<br>extremes</th></tr>']
  for name, d in (('trained model', c), ('untrained model<br>(control)', u)):
    if d:
      rows.append(f'<tr><td>{name}</td>' + ''.join(
          cell(d.get(g)) for g in ('mid', 'low_tail', 'high_tail', 'extremes'))
          + f'<td>{_fmt(d.get("mid_minus_extremes"))}<br>'
          f'{_ci_text(d.get("mid_minus_extremes_ci"))}</td></tr>')
  empty = c.get('n_empty') or 0
  return ('<div class="scroll"><table>' + ''.join(rows) + '</table></div>'
          '<p class="note">Entropy of each image\'s own aesthetic map (its positive part) on '
          'the grid it comes at (0: all in one cell, 1: uniform), averaged per group with 95% '
          'bootstrap intervals; an average map (the figures above) is diffuse also when sharp '
          'maps point at different places, so the question is asked of each map. The values '
          'depend on the grid: compare them within one model, not across models. '
          f'{_esc(_concentration_verdict(c, u))}'
          + (f' {empty} empty map(s) left out.' if empty else '') + '</p>')


def _localization_table(s: Mapping) -> str:
  m = s['metrics']
  loc = m.get('localization') or {}
  if not loc:
    return ('<p class="note">No region masks (real AVA has none): the pointing game and mask '
            'mass need <code>--masks_dir</code> with <code>&lt;image_id&gt;.png</code> regions.'
            '</p>')
  rows = _method_rows(loc, LOCALIZATION_COLUMNS)
  base = m.get('pointing_game_centre_baseline')
  centre = {'pointing_game': base, 'margin_over_centre': 0, 'pointing_game_upsampled': base,
            'pointing_game_aesthetic_target': base,
            'mask_mass': m.get('mask_mass_area_baseline'),
            'box_iou': m.get('box_iou_centre_box_baseline')}
  rows.append('<tr><td>centre point / uniform map / centred box</td>' + ''.join(
      f'<td>{_fmt(centre[k])}</td>' if k in centre else '<td>—</td>'
      for k, _ in LOCALIZATION_COLUMNS) + '</tr>')
  if m.get('box_iou_full_frame_baseline') is not None:
    rows.append('<tr><td>full frame</td>' + ''.join(
        f'<td>{_fmt(m["box_iou_full_frame_baseline"])}</td>' if k == 'box_iou' else '<td>—</td>'
        for k, _ in LOCALIZATION_COLUMNS) + '</tr>')
  layers = ', '.join(m.get('cam_layers') or ()) or 'the encoder output'
  hw = 'x'.join(str(v) for v in m.get('cam_map_size') or ())
  note = (f'<p class="note">Every test image with a region mask '
          f'({_fmt(m.get("localization_num_defective"))} of '
          f'{_fmt(m.get("localization_num_images"))}; ScoreCAM on the first few), maps at '
          f'{_esc(layers)} ({_esc(hw)} cells). Pointing game: the centre of the highest cell of '
          'the map of the <em>low</em> target (the negated aesthetic score: what makes the image '
          'worse) falls inside the region; the margin is paired by image against the centre '
          'point, which always points at the image centre; 95% bootstrap intervals in brackets. '
          'Mask mass: the share of the (non-negative) map inside the region; a uniform map gets '
          'the region\'s area share. Box IoU: the suggested box of the low map (threshold '
          f'{_fmt(m.get("box_threshold"))}) against the region\'s bounding box; the fixed '
          'boxes it has to beat are the centred box of half the sides and the full frame. '
          'The last column: the share of these images whose low-target and aesthetic-target '
          'maps peak at the same cell. The two targets are opposite, so a method that follows '
          'the target rarely does; where one mostly does, it ignores the target (EigenCAM by '
          'design, its two maps being the same), and its pointing game says where the '
          'image\'s dominant pattern is, not what makes it worse. A method localises what it '
          'is asked for only where it beats both the centre point and its untrained maps, '
          'with intervals above 0 (a method scored on too few images to resample has none, '
          'and shows no more than an anecdote). These are one trained model\'s maps: '
          'another seed, or the same run on a CPU with other vector instructions, trains '
          'another model, whose maps may localise where these do not, or the reverse (on the '
          'demo both happened: README); <code>aesthetics-control</code> tests the path over '
          'several seeds. Regions: '
          f'<code>{_esc(m.get("localization_masks", ""))}</code>.</p>')
  errors = m.get('localization_mask_errors') or []
  if errors:
    shown = ''.join(f'<li>{_esc(e)}</li>' for e in errors[:10])
    more = f'<li>and {len(errors) - 10} more</li>' if len(errors) > 10 else ''
    note += (f'<p class="missing">Caution: {len(errors)} mask file(s) could not be read; '
             f'their images were scored as having no region:</p><ul>{shown}{more}</ul>')
  return _table(rows) + note + _controls_table(m)


def _method_rows(loc: Mapping, cols: Sequence[tuple[str, str]]) -> list[str]:
  """Header and one row per method of `loc` ({method: values}) for `cols` (key, label)."""
  rows = ['<tr><th>CAM method</th>' + ''.join(f'<th>{_esc(l)}</th>' for _, l in cols) + '</tr>']
  for method, vals in loc.items():
    cells = ''.join(f'<td>{_fmt(vals.get(k))}'
                    f'{_interval(vals.get(k), vals.get(f"{k}_ci")) if k in _WITH_CI else ""}'
                    '</td>' for k, _ in cols)
    rows.append(f'<tr><td>{_esc(method)}</td>{cells}</tr>')
  return rows


def _controls_table(m: Mapping) -> str:
  """The localisation controls beside the trained maps' pointing game ('' for a run that
  scored none: localization_controls off, or metrics from before they existed); a control
  that was skipped says why."""
  loc, controls = m.get('localization') or {}, m.get('localization_controls') or {}
  cols = [(k, l) for k, l in CONTROL_COLUMNS
          if k == 'pointing_game' or any(k in vals for vals in loc.values())]
  if len(cols) == 1 and not controls:
    return ''
  table = _table(_method_rows(loc, cols)) if len(cols) > 1 else ''
  return (f'<p><strong>Controls</strong> on the same images.</p>{table}'
          f'<p class="note">{_controls_text(controls)}</p>')


def _controls_text(controls: Mapping[str, str]) -> str:
  """The localisation note's sentences on its controls (what they are, or why skipped)."""
  out = ''
  u = controls.get('untrained', '')
  if u.startswith('skipped'):
    out += f'Untrained model: {_esc(u)}. '
  elif u:
    out += ('Untrained model: the same maps of the variables training started from (seed '
            'init, and the ImageNet encoder if one was loaded); maps that point before any '
            'training say the region is conspicuous, not that the maps follow what the model '
            'learned; the margin is paired by image. ')
  if controls.get('shuffled_masks'):
    out += ("Another image's region (negative control): the trained maps scored against the "
            'region of another image of the same batch; a high value there is a spatial prior '
            '(regions sit in similar places), not localisation. ')
  return out


def _examples_caption(arch: str, threshold: Any) -> str:
  """What the columns of Figures 5-6 show: the two-headed model has an attribute map and an
  average box, the binary VGG16 only the aesthetic map."""
  if arch == 'mobilenet_v2':
    return ('Columns: image (true / predicted mean score), aesthetic map with its box (white, '
            f'threshold {_fmt(threshold)}) and the average of the aesthetic and attribute boxes '
            '(red), attribute map for the top predicted tag with its box, and the crop (the '
            'average box).')
  return ('Columns: image (true mean score / predicted p(high)), aesthetic map (the logit\'s '
          f'map) with its box (white, threshold {_fmt(threshold)}), and the crop (that box). '
          'This model has no tag head, hence no attribute map or average box.')


def _bucket_caption(arch: str, m: Mapping | None = None) -> str:
  first = ('The average (per-image normalised) aesthetic map of the test images in each true '
           'score bucket (nearest integer score; "no images" where a bucket is empty).')
  if arch != 'mobilenet_v2':
    return first + _entropy_caption(m or {})
  return (first + ' Then the average map of each target score bucket 1-10 (columns) over test '
          'images grouped by their true mean score (rows), and single examples.'
          + _entropy_caption(m or {}))


def _entropy_caption(m: Mapping) -> str:
  if not m.get('map_concentration'):
    return ''
  return (' The paper reads these as diffuse for mid-range images and concentrated at the '
          'extremes; the entropy plot and the table below measure that per image'
          + (', beside the maps of the model before training.'
             if m.get('map_concentration_untrained') else '.'))


def _explorer_link(s: Mapping, base: Path | str | None) -> str:
  path = s.get('explorer')
  if not path:
    return ''
  href = str(path) if not io_lib.is_local(path) else Path(path).as_posix()
  if base is not None and io_lib.is_local(path) and io_lib.is_local(base):
    href = Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
  elif base is not None and _same_bucket(str(path), str(base)):
    # A cloud report beside its explorer: a gs:// href opens in no browser; a relative one
    # does once the folder is copied down (gsutil cp -r).
    root = str(base).split('://', 1)[1]
    href = urllib.parse.quote(posixpath.relpath(str(path).split('://', 1)[1], root))
  if io_lib.is_local(path):  # a URL: '#', '%' or '?' in a folder name would cut the path
    # surrogateescape: a folder name that is not UTF-8 keeps its own bytes (%FF), the file's
    href = urllib.parse.quote(href, errors='surrogateescape')
  m = s['metrics']
  methods = ', '.join(str(x) for x in m.get('explorer_methods') or ()) or 'the CAM methods'
  return (f'<p class="explorer-link"><a href="{_esc(href)}">Open the interactive explorer</a>: '
          f'all {_fmt(m.get("explorer_images"))} test images, sortable and filterable by true '
          f'and predicted score, map intensity and top tag; click one for its maps '
          f'({_esc(methods)}), boxes and crop.</p>')


def _same_bucket(url: str, base: str) -> bool:
  """Whether two cloud URLs share scheme and bucket ('gs://b/run/x', 'gs://b/run')."""
  if '://' not in url or '://' not in base:
    return False
  (s1, r1), (s2, r2) = url.split('://', 1), base.split('://', 1)
  return s1 == s2 and r1.split('/', 1)[0] == r2.split('/', 1)[0]


def _anchor(s: Mapping) -> str:
  """A model section's id: prefixed, so that a model (workdir) called 'data' or 'summary'
  does not take the page's own sections' ids."""
  return _esc(f'model-{s["name"]}')


def _model_section(s: Mapping, base: Path | str | None = None, demo: bool = False) -> str:
  figs, m = s.get('figures', {}), s['metrics']
  arch = str(s.get('arch', ''))
  anchor = _anchor(s)
  # Names in <bdi>/isolated links: a right-to-left override in a name (a workdir name is
  # anything) reversed the text after it (the rest of the heading, the later nav links).
  out = [f'<h2 id="{anchor}">Model: <bdi>{_esc(s["name"])}</bdi> ({_esc(arch)}), '
         f'checkpoint step {_fmt(s.get("step"))}</h2>']
  if s.get('workdir'):
    out.append(f'<p class="note">workdir: <code>{_esc(s["workdir"])}</code></p>')
  for n in s.get('notes', ()):
    out.append(f'<p class="note">{_esc(n)}</p>')
  out.append(_explorer_link(s, base))
  out.append('<h3>Highest- and lowest-rated test images (paper Figures 5-6)</h3>')
  out.append(f'<p class="note">{_esc(_examples_caption(arch, m.get("box_threshold")))}</p>')
  out.append(embed_png(figs.get('examples_high'), 'highest-rated test images'))
  out.append(embed_png(figs.get('examples_low'), 'lowest-rated test images'))
  out.append('<h3>Map intensity vs mean score (paper Figure 7, Table 1)</h3>')
  out.append(_table1(s, demo))
  out.append(embed_png(figs.get('intensity_scatter_per_image'),
                       'intensity scatter, per-image normalisation'))
  out.append(embed_png(figs.get('intensity_scatter_global'),
                       'intensity scatter, global normalisation'))
  out.append('<h3>Maps per score bucket (paper Figure 8)</h3>')
  out.append(f'<p class="note">{_esc(_bucket_caption(arch, m))}</p>')
  out.append(embed_png(figs.get('score_bucket_maps'), 'aesthetic map per true score bucket'))
  out.append(embed_png(figs.get('map_entropy'), 'map entropy by true score bucket'))
  out.append(_concentration(m))
  if figs.get('bucket_maps') is not None:
    out.append(embed_png(figs.get('bucket_maps'), 'per-target-bucket maps'))
  if figs.get('bucket_maps_examples') is not None:
    out.append(embed_png(figs.get('bucket_maps_examples'), 'per-bucket maps, examples'))
  out.append('<h3>Do the maps point at what made an image bad?</h3>')
  out.append(_localization_table(s))
  out.append('<h3>Faithfulness of the CAM methods</h3>')
  out.append(_faithfulness_table(s, demo))
  for key in ('faithfulness_deletion', 'faithfulness_insertion'):
    if figs.get(key) is not None:
      out.append(embed_png(figs[key], key.replace('_', ' ')))
  return '\n'.join(out)


def render(models: Sequence[Mapping], dataset: Mapping | None = None, demo: bool = False,
           title: str = 'aesthetics-jax evaluation report', base: Path | str | None = None
           ) -> str:
  """Returns the report as one HTML string (all images inline); `base`: the report's folder
  (a cloud URL for a cloud report), which links to each model's explorer are relative to."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         f'<title>{_esc(title)}</title><style>{_CSS}</style></head><body>',
         f'<h1>{_esc(title)}</h1><p class="note">generated {now}</p>']
  if demo:
    out.append(f'<div class="banner" id="demo-banner">DEMO DATA. {_esc(DEMO_BANNER)}</div>')
  out.append('<nav>' + '<a href="#summary">summary</a><a href="#data">data</a>' + ''.join(
      f'<a href="#{_anchor(s)}">{_esc(s["name"])}</a>' for s in models) + '</nav>')
  out.append('<h2 id="summary">Accuracy beside the paper and NIMA</h2>')
  out.append(_accuracy_table(models, demo))
  out.append('<p class="note">Binary accuracy: high if mean score &gt; 5 (EMD model: by the '
             'predicted mean score; binary model: p_high &gt; 0.5). Majority rate: accuracy of '
             'always predicting the larger class of the test split. LCC / SRCC: Pearson / '
             'Spearman correlation of the predicted with the true mean score; the binary model '
             'has no predicted mean score, so its are of p_high with the true mean score. Paper: '
             f'validation accuracy ({_esc(PAPER_SOURCE.split(";")[0])}); NIMA: AVA test set, '
             'full fine-tuning.</p>')
  out.append('<h2 id="data">Data statistics (paper Figures 1-2)</h2>')
  if dataset:
    stats = dataset.get('stats') or {}
    if stats:
      out.append(_table([
          f'<tr><td>{_esc(k)}</td><td>{_fmt(v) if not isinstance(v, (dict, list)) else _esc(v)}'
          '</td></tr>' for k, v in stats.items()]))
    figs = dataset.get('figures') or {}
    for key, fig in figs.items():
      out.append(embed_png(fig, key.replace('_', ' ')))
    if not figs:
      out.append('<p class="missing">(no dataset figures found)</p>')
  else:
    out.append('<p class="missing">(dataset statistics not available)</p>')
  for s in models:
    out.append(_model_section(s, base, demo))
  out.append('</body></html>')
  return '\n'.join(out)


def write_report(path: str | os.PathLike, models: Sequence[Mapping],
                 dataset: Mapping | None = None, demo: bool = False,
                 title: str = 'aesthetics-jax evaluation report',
                 staged: io_lib.Staged | None = None) -> Path:
  """Renders and atomically writes the report (with `staged`'s files, if given); returns its
  path."""
  local = io_lib.is_local(path)  # a cloud report links its explorer relative to its URL
  base = Path(path).parent.resolve() if local else str(io_lib.path(path).parent)
  page = render(models, dataset, demo, title, base=base)
  if staged is not None:
    return staged.write_text(path, page)
  io_lib.atomic_write_text(path, page)
  return io_lib.path(path)
