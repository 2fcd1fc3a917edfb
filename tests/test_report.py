"""Report and figures from synthetic plain inputs (no JAX, no trained model)."""
import base64
import copy
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from aesthetics_jax.data import stats as data_stats
from aesthetics_jax.report import charts, overlays
from aesthetics_jax.report import html as report_html


def _example(rng, score):
  img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
  cam = rng.random((40, 48)).astype(np.float32)
  return dict(image=img, aesthetic_map=cam, attribute_map=cam[::-1], crop=img[5:30, 5:40],
              boxes={'aesthetic': (2, 3, 30, 40), 'average': (4, 4, 35, 44),
                     'attribute': (0, 0, 20, 20)}, caption=f'true {score:.2f}')


@pytest.fixture(scope='module')
def sections():
  rng = np.random.default_rng(0)
  scores = rng.normal(5.4, 1.0, 80)
  inten = 0.3 + 0.02 * scores + rng.normal(0, 0.05, 80)
  figs = {
      'examples_high': charts.examples_figure([_example(rng, 8.1), _example(rng, 7.9)], 'high'),
      'examples_low': charts.examples_figure([_example(rng, 2.1)], 'low'),
      'intensity_scatter_per_image': charts.intensity_scatter(inten, scores, pearson_all=0.2),
      'intensity_scatter_global': charts.intensity_scatter(inten, scores),
      'bucket_maps': charts.bucket_maps_figure(rng.random((3, 10, 7, 7)), np.array([3, 0, 2]),
                                                ['low', 'mid', 'high'], 'buckets'),
      'score_bucket_maps': charts.bucket_maps_figure(
          rng.random((1, 10, 7, 7)), np.array([[1, 2, 0, 4, 5, 6, 7, 8, 9, 1]]), ['aes'], 's',
          col_labels=[f'score~{j + 1}' for j in range(10)]),
      'faithfulness_deletion': charts.curves_figure({'gradcam': np.linspace(1, 0, 9)}, 'd', 'p'),
  }
  metrics = dict(num_test_images=80, binary_accuracy=0.6543, binary_accuracy_ci=[0.5, 0.7],
                 majority_rate=0.71, lcc_mean=0.31, srcc_mean=0.29, emd=0.1,
                 attribute_top1=0.2, attribute_top5=0.5,
                 cam_intensity_pearson_all=0.1234, cam_intensity_pearson_all_per_image=0.1234,
                 cam_intensity_pearson_all_global=0.2345,
                 cam_intensity_pearson_all_per_image_ci=[0.01, 0.3],
                 cam_intensity_pearson_extreme_per_image=0.4567,
                 cam_intensity_pearson_extreme_global=0.5678,
                 cam_intensity_n_all=80, cam_intensity_n_extreme=17,
                 split_point_threshold_per_image=0.41, split_point_accuracy_per_image=0.5321,
                 split_point_threshold_global=0.3, split_point_accuracy_global=0.55,
                 faithfulness={'gradcam': dict(deletion_auc=0.111, insertion_auc=0.777,
                                               randomization_spearman=0.05),
                               'eigencam': dict(deletion_auc=0.222, insertion_auc=0.666,
                                                randomization_spearman=float('nan'))},
                 localization={'gradcam': dict(pointing_game=0.6789, pointing_game_ci=[0.6, 0.75],
                                               margin_over_centre=0.3333, mask_mass=0.4,
                                               num_defective=50, pointing_game_untrained=0.2109,
                                               margin_over_untrained=0.468,
                                               margin_over_untrained_ci=[0.41, 0.52],
                                               pointing_game_shuffled_masks=0.0987),
                               'eigencam': dict(pointing_game=float('nan'), num_defective=50),
                               'scorecam': dict(pointing_game=1.0, num_defective=2,
                                                pointing_game_ci=[float('nan')] * 2,
                                                margin_over_centre=1.0,
                                                margin_over_centre_ci=[float('nan')] * 2)},
                 localization_num_defective=50, localization_num_images=80,
                 cam_layers=['features.6'], cam_map_size=[8, 8],
                 pointing_game_centre_baseline=0.3456,
                 intensity_untrained=dict(cam_intensity_pearson_all_per_image=0.0617,
                                          cam_intensity_pearson_all_per_image_ci=[-0.02, 0.14],
                                          split_point_accuracy_global=0.4812),
                 localization_controls={'untrained': 'the maps of the start',
                                        'shuffled_masks': 'another image'})
  mnv2 = dict(name='mobilenet_v2', arch='mobilenet_v2', step=7, metrics=metrics, figures=figs,
              notes=['a note'])
  vgg = dict(name='vgg16', arch='vgg16', step=3, figures={},
             metrics=dict(num_test_images=80, binary_accuracy=0.6))
  dataset = dict(figures={'mean_score_hist': data_stats.plot_mean_score_hist(scores),
                          'tag_counts': data_stats.plot_tag_counts({'Nature': 30,
                                                                    'Portraiture': 12})},
                 stats={'train_images': 100, 'test_images': 80})
  return [mnv2, vgg], dataset, figs


def test_figures_are_png_and_overlay_shapes():
  rng = np.random.default_rng(1)
  img = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
  ov = overlays.overlay(img, rng.random((7, 7)).astype(np.float32))
  assert ov.shape == img.shape and ov.dtype == np.uint8
  boxed = overlays.draw_boxes(img, {'aesthetic': (5, 5, 20, 30)})
  assert (boxed != img).any() and (boxed[0, 0] == img[0, 0]).all()
  assert data_stats.plot_mean_score_hist(rng.normal(5, 1, 20))[:8] == b'\x89PNG\r\n\x1a\n'


def test_legend_of_a_narrow_image_fits_and_photos_keep_their_width():
  """`add_legend` made its strip as wide as the image: a 32-px-wide image's legend had no room
  for a word. A narrow image is centred on a band of the legend's background as wide as
  LEGEND_MIN_WIDTH (or the widest item); a wide one is unchanged above its strip. Boxes are at
  most 1/16 of the short side wide (a 40x20000 strip's were 100 px, covering it)."""
  rng = np.random.default_rng(2)
  narrow = rng.integers(0, 255, (300, 32, 3), dtype=np.uint8)
  out = overlays.add_legend(narrow, 'map: aesthetic (gradcam)', ['aesthetic', 'average'])
  w, left = overlays.LEGEND_MIN_WIDTH, (overlays.LEGEND_MIN_WIDTH - 32) // 2
  assert out.shape[1] == w and out.shape[0] > 300
  assert (out[:300, left:left + 32] == narrow).all()
  assert (out[:300, :left] == overlays.LEGEND_BACKGROUND).all()
  assert (out[:300, left + 32:] == overlays.LEGEND_BACKGROUND).all()
  title = 'map: tag:Floral (gradcampp, features.14,features.18, features.6)'
  assert overlays.add_legend(narrow, title).shape[1] > w  # its widest item decides
  photo = rng.integers(0, 255, (200, 400, 3), dtype=np.uint8)
  out = overlays.add_legend(photo, 'map: aesthetic (gradcam)', ['aesthetic'])
  assert out.shape[1] == 400 and (out[:200] == photo).all()
  # A full-resolution picture is shown scaled down: its text grows with it (a 3000-px-wide
  # legend was 46 px tall); a long strip's stays at 28 px; up to 1260 px wide, as before.
  strip_h = {hw: overlays.add_legend(np.zeros(hw + (3,), np.uint8), 'map: aesthetic (gradcam)',
                                    ['aesthetic', 'average']).shape[0] - hw[0]
             for hw in ((2000, 3000), (40, 20000), (683, 1024))}
  assert strip_h[(2000, 3000)] > 80 and strip_h[(40, 20000)] < 50 and strip_h[(683, 1024)] < 50
  assert [overlays.box_width(hw) for hw in ((683, 1024), (4000, 6000), (48, 80), (40, 20000),
                                           (5000, 32))] == [5, 30, 2, 2, 2]


@pytest.mark.parametrize('hw, k', [((1024, 8000), 1), ((100, 1000), 1), ((100, 1001), 2),
                                    ((40, 20000), 16), ((20000, 40), 16), ((128, 2560), 3)])
def test_fold_count_leaves_photos_and_folds_strips_about_two_to_one(hw, k):
  assert overlays.fold_count(hw) == k
  if k > 1:
    folded = overlays.fold(np.zeros(hw + (3,), np.uint8), k)
    ratio = max(folded.shape[:2]) / min(folded.shape[:2])
    assert 1.2 <= ratio <= 3.5, folded.shape


def test_fold_keeps_every_pixel_in_reading_order():
  """Rows top to bottom for a wide picture, columns left to right for a tall one; the gaps and
  the last piece's padding are background."""
  wide = np.arange(7 * 50 * 3, dtype=np.uint32).reshape(7, 50, 3).astype(np.uint8)
  out = overlays.fold(wide, 3, gap=2)
  assert out.shape == (3 * 7 + 2 * 2, 17, 3)
  np.testing.assert_array_equal(out[:7], wide[:, :17])
  np.testing.assert_array_equal(out[9:16], wide[:, 17:34])
  np.testing.assert_array_equal(out[18:25, :16], wide[:, 34:])
  assert (out[7:9] == overlays.LEGEND_BACKGROUND).all()
  assert (out[18:25, 16:] == overlays.LEGEND_BACKGROUND).all()
  tall = wide.transpose(1, 0, 2)
  np.testing.assert_array_equal(overlays.fold(tall, 3, gap=2), out.transpose(1, 0, 2))
  assert overlays.fold(wide, 1) is not None and (overlays.fold(wide, 1) == wide).all()


def test_report_has_all_sections_images_and_banner(tmp_path, sections):
  models, dataset, figs = sections
  path = report_html.write_report(tmp_path / 'r' / 'report.html', models, dataset, demo=True)
  text = path.read_text()
  assert not list(path.parent.glob('*.tmp*'))
  assert 'id="demo-banner"' in text and 'DEMO' in text
  for heading in ('Data statistics', 'Figures 5-6', 'Figure 7', 'Figure 8', 'Faithfulness',
                  'Accuracy beside the paper'):
    assert heading in text, heading
  imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
  # 7 model figures + 2 dataset figures, each decodes to the PNG we passed in
  assert len(imgs) == len(figs) + 2
  assert base64.b64decode(imgs[0])[:4] == b'\x89PNG'
  # Table 1 beside the paper, both normalisations, CIs and n
  for s in ('0.24', '0.34', '49.7%', '0.123', '0.234', '0.457', '0.568', '53.2%', '[0.010, 0.300]',
            'n=17'):
    assert s in text, s
  # accuracy beside paper + NIMA
  for s in ('65.4%', '75.0%', '72.0%', '80.4%', '80.6%', '0.518', '0.610', '0.081', '0.051',
            '71.0%'):
    assert s in text, s
  # faithfulness and localisation side by side, NaN shown as n/a, centre baseline, CI, layer
  for s in ('gradcam', 'eigencam', '0.679', '[0.600, 0.750]', '0.333', '0.346', 'n/a',
            'centre point', '50 of 80', 'features.6 (8x8 cells)', '0.777'):
    assert s in text, s
  # A method scored on 2 images has no interval ([1.000, 1.000] read as certain): said so.
  row = re.search(r'<tr><td>scorecam</td>.*?</tr>', text).group(0)
  assert row.count('(too few images for an interval)') == 2 and '[' not in row
  # One run's maps are one draw of training (the demo's localising model flipped with the
  # CPU's vector instructions): said beside the numbers, with the control that tests the path.
  assert "These are one trained model's maps" in text
  assert '<code>aesthetics-control</code> tests the path over several seeds' in text
  assert 'Caution' not in text   # maps of a normal size: no warning
  m = dict(models[0]['metrics'], tiny_maps_warning='the test maps peak at 3e-09, near x')
  assert 'Caution: the test maps peak at 3e-09, near x.' in report_html.render(
      [{**models[0], 'metrics': m}], None, demo=False)
  # Fused layers are min-max scaled per image: the global column repeats the per-image one.
  fused = dict(models[0]['metrics'], cam_layers=['features.7', 'features.14'])
  assert 'so the dataset-global normalisation repeats the per-image one' in report_html.render(
      [{**models[0], 'metrics': fused}], None, demo=False)
  # Table 1's untrained-model columns
  for s in ('The same study, untrained model', '0.062', '[-0.020, 0.140]', '48.1%'):
    assert s in text, s
  # the controls beside it: untrained model (margin paired, CI) and another image's region
  for s in ('untrained model', '0.211', '0.468', '[0.410, 0.520]', "another image&#x27;s region",
            '0.099', 'negative control'):
    assert s in text, s


def test_localization_table_drops_controls_it_lacks(sections):
  models, _, _ = sections
  m = dict(models[0]['metrics'])
  m['localization'] = {'gradcam': dict(pointing_game=0.5, num_defective=3)}
  m.pop('localization_controls')
  m.pop('intensity_untrained')
  m['intensity_untrained_note'] = 'skipped: the starting weights could not be rebuilt (x)'
  text = report_html.render([{**models[0], 'metrics': m}], None, demo=False)
  assert 'pointing game, low target' in text and 'untrained model' not in text
  assert 'Untrained model: skipped: the starting weights could not be rebuilt (x).' in text
  assert 'another image' not in text
  # the VGG section without figures says so instead of breaking
  assert 'not available' in text


def test_report_without_demo_has_no_banner(tmp_path, sections):
  models, _, _ = sections
  text = report_html.render(models[:1], None, demo=False)
  assert 'demo-banner' not in text
  assert 'dataset statistics not available' in text


def _figure_texts(monkeypatch, fn, *args, **kwargs) -> list[str]:
  """Every text a figure function draws (titles, labels, annotations)."""
  seen = []

  def capture(fig):
    seen.extend(t.get_text() for t in fig.findobj(lambda a: hasattr(a, 'get_text')))
    return b''

  monkeypatch.setattr(charts, '_png', capture)
  fn(*args, **kwargs)
  return seen


def test_empty_buckets_say_no_images_and_titles_are_short(monkeypatch):
  texts = _figure_texts(monkeypatch, charts.bucket_maps_figure, np.zeros((1, 10, 4, 4)),
                        np.array([[0, 3, 0, 1, 1, 1, 1, 1, 1, 0]]), ['aes'], 't',
                        col_labels=[f'score {j + 1}\nn=0' for j in range(10)])
  assert texts.count('no images') == 3
  # two short lines per column title: wide single-line titles overlapped their neighbours
  assert all(max(map(len, t.split('\n'))) <= 10 for t in texts if t.startswith('score'))


def test_figure_text_with_dollars_is_literal():
  odd = '$\\foo{1$'
  rng = np.random.default_rng(0)
  ex = dict(_example(rng, 5.0), attribute_name=f'attribute map: {odd}', caption=odd)
  for png in (charts.examples_figure([ex], odd),
              charts.bucket_maps_figure(rng.random((1, 10, 4, 4)), np.array([1]), [odd], odd),
              charts.image_bucket_maps_figure(ex['image'], rng.random((10, 40, 48)), odd),
              charts.curves_figure({odd: np.linspace(1, 0, 5)}, odd, odd),
              charts.intensity_scatter(rng.random(9), rng.random(9) * 9, title=odd),
              data_stats.plot_tag_counts({odd: 3, 'Macro': 1})):
    assert png[:4] == b'\x89PNG'


def test_captions_follow_the_architecture(sections):
  models, _, _ = sections
  assert overlays.aesthetic_title({'aesthetic': (0, 0, 1, 1)}) == 'aesthetic map; box (white)'
  assert 'avg (red)' in overlays.aesthetic_title({'aesthetic': (0, 0, 1, 1),
                                                 'average': (0, 0, 1, 1)})
  assert overlays.aesthetic_title({}, empty=True).startswith('aesthetic map EMPTY')
  # A full-frame box runs along the panel's edge: the caption says what it is.
  assert overlays.aesthetic_title({'aesthetic': (0, 0, 40, 48), 'average': (2, 3, 30, 40)},
                                 hw=(40, 48)) == ('aesthetic map; box (white) = full frame, '
                                                  'avg (red)')
  mnv2, vgg = (report_html.render([s]).split('Figures 5-6')[1] for s in models)
  assert 'attribute map' in mnv2.split('Figure 7')[0]
  vgg = vgg.split('Figure 7')[0]
  assert 'attribute map for' not in vgg and 'average of' not in vgg and 'no tag head' in vgg


def test_tables_scroll_inside_their_box_and_explorer_is_linked(tmp_path, sections):
  models, dataset, _ = sections
  (tmp_path / 'm' / 'eval' / 'explorer').mkdir(parents=True)
  index = tmp_path / 'm' / 'eval' / 'explorer' / 'index.html'
  index.write_text('x')
  section = dict(models[0], explorer=str(index),
                 metrics=dict(models[0]['metrics'], explorer_images=80,
                              explorer_methods=['gradcam']))
  text = report_html.write_report(tmp_path / 'report.html', [section], dataset).read_text()
  assert text.count('<table>') == text.count('<div class="scroll"><table>') >= 4
  assert 'href="m/eval/explorer/index.html"' in text and 'all 80 test images' in text



def test_explorer_link_is_a_url_whatever_the_folder_is_called(tmp_path, sections):
  """'#', '%', '?', spaces and non-ASCII in a workdir name: the link was the raw path, which a
  browser cut at the '#' (a fragment) and read '%' as an escape ('file could not be
  accessed')."""
  import html  # pylint: disable=import-outside-toplevel
  import urllib.parse  # pylint: disable=import-outside-toplevel
  models, _, _ = sections
  index = tmp_path / 'run #1 100% ?ü' / 'eval' / 'explorer' / 'index.html'
  index.parent.mkdir(parents=True)
  index.write_text('x')
  text = report_html.write_report(tmp_path / 'report.html',
                                  [dict(models[0], explorer=str(index))]).read_text()
  href = html.unescape(re.search(r'<a href="([^"]*)">Open the interactive', text).group(1))
  url = urllib.parse.urlsplit(href)
  assert not url.fragment and not url.query and not url.scheme, href
  assert tmp_path / urllib.parse.unquote(url.path) == index


def test_names_are_escaped_and_every_lt_starts_a_tag(sections):
  """Model, workdir, note and method names are text (no injected script or attribute), and the
  page's own text writes '<' as &lt; (Table 1's '(<4.5 or >6.5)' was a parse error)."""
  models, dataset, _ = sections
  evil = '</title><script>alert(1)</script>"\' onload=x \u202e&amp;'
  m = dict(models[0]['metrics'], faithfulness={evil: dict(deletion_auc=0.1)})
  text = report_html.render([dict(models[0], name=evil, workdir=evil, notes=[evil], metrics=m)],
                            dict(stats={evil: evil}), title=evil)
  assert '<script' not in text and '" onload' not in text
  assert re.findall(r'<(?![a-zA-Z/!])', text) == []


def test_a_model_named_like_a_section_links_to_itself(sections):
  """Models (workdirs) called 'data' or 'summary': their nav links went to the page's own
  sections of those ids, and the ids were not unique."""
  models, _, _ = sections
  text = report_html.render([dict(models[1], name=n) for n in ('data', 'summary')])
  ids = re.findall(r' id="([^"]*)"', text)
  assert len(ids) == len(set(ids)), ids
  nav = re.search(r'<nav>(.*?)</nav>', text).group(1)
  links = re.findall(r'<a href="#([^"]*)">([^<]*)</a>', nav)[2:]  # after summary and data
  assert [n for _, n in links] == ['data', 'summary']
  for target, name in links:
    assert re.search(rf'<h2 id="{re.escape(target)}">Model: <bdi>{name}</bdi> ', text), name

def test_claims_carry_their_controls(sections):
  """The scientific audit's findings: the split point is read against the majority class
  (share called high, balanced accuracy, gain [CI], a degenerate rule named as such); the
  faithfulness table has the random pixel order's chance row and intervals; box IoU has its
  fixed-box baselines; VGG16's LCC is marked as of p_high; demo reports say the paper's
  figures are not comparable."""
  models, _, _ = sections
  m = dict(models[0]['metrics'])
  m.update(split_point_gain_per_image=0.02, split_point_gain_ci_per_image=[-0.003, 0.043],
           split_point_predicted_high_per_image=0.96,
           split_point_balanced_accuracy_per_image=0.549,
           split_point_degenerate_per_image=False, split_point_gain_global=0.0,
           split_point_gain_ci_global=[0.0, 0.0], split_point_predicted_high_global=1.0,
           split_point_balanced_accuracy_global=0.5, split_point_degenerate_global=True,
           cam_intensity_pearson_low_tail_per_image=0.06,
           cam_intensity_pearson_high_tail_per_image=-0.265,
           cam_intensity_n_low_tail=31, cam_intensity_n_high_tail=21,
           faithfulness_random=dict(deletion_auc=0.51, deletion_auc_ci=[0.45, 0.57],
                                    insertion_auc=0.52, insertion_auc_ci=[0.46, 0.58]),
           box_iou_full_frame_baseline=0.195, box_iou_centre_box_baseline=0.234)
  text = report_html.render([{**models[0], 'metrics': m}, models[1]], None, demo=True)
  assert ('threshold 0.410; calls 96.0% high<br>balanced accuracy 0.549<br>vs the majority '
          'class +2.0 pp [-0.3, +4.3]') in text
  assert '<strong>degenerate</strong>: the fitted rule<br>calls every fit image high' in text
  assert '*Paper: AVA style subset, 2,203 test images' in text
  assert 'Pearson r within each tail, low / high (n=31 / 21)' in text
  assert '<td>random order (chance)</td>' in text and '[0.450, 0.570]' in text
  assert '<td>full frame</td>' in text and '0.195' in text and '0.234' in text
  assert 'it ignores the target (EigenCAM by design' in text
  assert '<th>low and aesthetic maps peak at one cell</th>' in text
  assert 'blur is one of the planted defects' in text  # demo only
  assert 'paper* (not comparable with this demo)' in text and 'real AVA; not comparable' in text
  vgg = dict(models[1], metrics=dict(models[1]['metrics'], lcc_mean=0.53, srcc_mean=0.57))
  text = report_html.render([vgg], None, demo=False)
  assert text.count('(of p_high)') == 2 and 'not comparable' not in text
  assert 'blur is one of the planted defects' not in text


def _entropies(mid: float, low: float, high: float, seed: int = 0):
  """Synthetic per-image entropies (and their scores): mid-range images around `mid`, the low
  and high tails around `low` / `high`; the scores are the same for every call."""
  rng = np.random.default_rng(0)
  scores = np.concatenate([rng.uniform(4.6, 6.4, 60), rng.uniform(2, 4.4, 30),
                           rng.uniform(6.6, 8.5, 30)])
  base = np.where(scores < 4.5, low, np.where(scores > 6.5, high, mid))
  return base + np.random.default_rng(seed).normal(0, 0.03, scores.size), scores


def _concentration(mid: float, ext: float, seed: int = 0, control=None, high=None,
                   predicted=None) -> dict:
  """`study.map_concentration` of `_entropies`; `control`: (mid, ext) of the untrained maps;
  `predicted`: 'unrelated' (noise) or 'driver' (the entropy is a function of it)."""
  from aesthetics_jax.evaluation import study
  ent, scores = _entropies(mid, ext, ext if high is None else high, seed)
  ctrl = None if control is None else _entropies(*control, control[1], seed + 1)[0]
  pred = None
  if predicted == 'unrelated':
    pred = np.random.default_rng(5).normal(5, 1, scores.size)
  c = study.map_concentration(ent, scores, num_bootstrap=200, control=ctrl, predicted=pred)
  if predicted == 'driver':  # what a prediction that drives the entropy gives (test_analysis)
    c['spearman_given_predicted'], c['spearman_given_predicted_ci'] = 0.02, [-0.1, 0.13]
  if ctrl is not None:
    c['margin_over_untrained'] = c.pop('margin_over_control')
    c['margin_over_untrained_ci'] = c.pop('margin_over_control_ci')
  return c


def test_concentration_table_says_what_the_intervals_show(sections):
  """Figure 8's reading as numbers, each verdict reachable: more diffuse at mid-range beyond
  the untrained maps and the prediction (the paper's reading holds), or not shown to be
  caused by training, no difference, less diffuse, tails that go opposite ways (a trend, not
  a peak), and an entropy that only follows the prediction."""
  models, _, _ = sections

  def text(trained, untrained=None):
    m = dict(models[0]['metrics'], map_concentration=trained)
    if untrained is not None:
      m['map_concentration_untrained'] = untrained
    return report_html.render([{**models[0], 'metrics': m}], None)

  flat = _concentration(0.7, 0.7, 1)
  t = text(_concentration(0.8, 0.6, control=(0.7, 0.7), predicted='unrelated'), flat)
  assert '<td>untrained model<br>(control)</td>' in t and 'low tail<br>(&lt; 4.5)' in t
  assert 'Entropy against the true score: Spearman' in t
  assert '(the untrained model&#x27;s maps: ' in t
  assert 'are more diffuse than the extremes' in t and '(paired by image), excludes 0.' in t
  assert 'the paper&#x27;s reading holds here' in t
  assert 'predicted score held fixed' not in t  # a peak, no trend: nothing to hold fixed
  # A trend (entropy rising with the score): is it the prediction's?
  t = text(_concentration(0.8, 0.6, high=0.95, predicted='unrelated'))
  assert 'tracks the true score beyond what the model predicts' in t
  t = text(_concentration(0.8, 0.6, high=0.95, predicted='driver'))
  assert 'follows what the model predicts' in t and 'reading holds' not in t
  t = text(_concentration(0.8, 0.6, control=(0.8, 0.6)), _concentration(0.8, 0.6, 1))
  assert 'does not: training is not shown to cause it' in t and 'reading holds' not in t
  assert 'No untrained control was run.' in text(_concentration(0.8, 0.6))
  assert 'spans 0).' in text(flat, flat)
  t = text(_concentration(0.5, 0.7), flat)
  assert 'are less diffuse than the extremes' in t and 'reading holds' not in t
  # Mid 0.8 against tails at 0.5 and 0.9: the extremes' mean (0.7) hides opposite tails.
  t = text(_concentration(0.8, 0.5, high=0.9, control=(0.7, 0.7), predicted='unrelated'))
  assert 'The tails go opposite ways' in t and 'low-score maps are more concentrated' in t
  assert 'high-score maps more diffuse (+0.' in t and 'not evidence for the paper' in t
  assert 'reading holds' not in t
  assert 'diffuse' not in report_html.render([models[1]], None).split('Figure 8')[-1]


def test_concentration_reading_needs_both_tails(sections):
  """The AVX-512 demo's MobileNetV2 (/tmp/demo4): low tail below mid-range, high tail level
  with it (+0.005 [-0.037, +0.043]), pooled mid - extremes +0.049 [+0.018, +0.079]; the report
  said the paper's reading (concentrated at BOTH extremes) holds."""
  models, _, _ = sections
  c = _concentration(0.8, 0.6, high=0.8, control=(0.7, 0.7), predicted='unrelated')
  assert c['low_tail_minus_mid_ci'][1] < 0 < c['mid_minus_extremes_ci'][0]
  assert c['high_tail_minus_mid_ci'][0] < 0 < c['high_tail_minus_mid_ci'][1]
  m = dict(models[0]['metrics'], map_concentration=c,
           map_concentration_untrained=_concentration(0.7, 0.7, 1))
  t = report_html.render([{**models[0], 'metrics': m}], None)
  assert 'reading holds' not in t
  assert 'the high-score maps are not shown to be more concentrated than mid-range' in t
  assert 'the low-score maps are not shown' not in t


def test_faithfulness_with_a_baseline_above_the_images_is_not_ranked(sections):
  """The AVX-512 demo's VGG16 (/tmp/demo4): the blurred baseline's logit was above the images'
  (gap -0.191), so Grad-CAM++'s deletion AUC -0.052 looked the most faithful, and its
  insertion 1.173 [1.001, 2.264] cleared the random order's [0.039, 0.606]."""
  models, _, _ = sections
  m = dict(models[0]['metrics'])
  m['faithfulness'] = {'gradcampp': dict(deletion_auc=-0.052, insertion_auc=1.173,
                                         insertion_auc_ci=[1.001, 2.264], baseline_gap=-0.191)}
  m['faithfulness_random'] = dict(deletion_auc=0.395, insertion_auc=0.486,
                                  insertion_auc_ci=[0.039, 0.606], baseline_gap=-0.191)
  t = report_html.render([{**models[0], 'metrics': m}], None, demo=True)
  assert 'Caution: the blurred baseline scores at or above the images' in t
  assert 'gap gradcampp -0.191, random order -0.191)' in t
  # Nothing above the Caution says which way is better, nor that the baseline lowers the score.
  assert '<th>deletion AUC</th>' in t and '<th>insertion AUC</th>' in t
  assert 'lower = better' not in t and 'higher = better' not in t
  assert 'lowers the score whichever' not in t
  m['faithfulness']['gradcampp']['baseline_gap'] = 1.43
  m['faithfulness_random']['baseline_gap'] = 1.43
  t = report_html.render([{**models[0], 'metrics': m}], None, demo=True)
  assert 'Caution: the blurred baseline' not in t
  assert '<th>deletion AUC (lower = better)</th>' in t and 'lowers the score whichever' in t


def test_faithfulness_figure_titles_follow_the_baseline(monkeypatch):
  """Under a baseline above the images the curves' titles still said 'lower area = more
  faithful' beside the report's Caution that no direction holds."""
  from aesthetics_jax.evaluation.evaluators import figures
  titles = []
  monkeypatch.setattr(charts, 'curves_figure', lambda curves, title, ylabel: titles.append(
      title) or b'png')
  curve = list(np.linspace(1, 0, 5))
  faith = {'gradcam': dict(deletion_curve=curve, insertion_curve=curve, baseline_gap=-0.191)}
  assert set(figures.faithfulness_figures({'faithfulness': faith})) == {
      'faithfulness_deletion', 'faithfulness_insertion'}
  faith['gradcam']['baseline_gap'] = 1.43
  figures.faithfulness_figures({'faithfulness': faith})
  assert titles == [
      'Deletion (normalised target score; baseline at or above the images: not ranked)',
      'Insertion (normalised target score; baseline at or above the images: not ranked)',
      'Deletion (normalised target score; lower area = more faithful)',
      'Insertion (normalised target score; higher area = more faithful)']
  assert figures.faithfulness_figures({}) == {}


def test_a_full_frame_box_is_named_so_in_the_legend():
  """predict's and the API's overlays named 'aesthetic' in the legend for a box drawn along the
  picture's edge, which nobody could find; the name now says it is the full frame, in the
  box's colour."""
  boxes = {'aesthetic': (0, 0, 40, 48), 'attribute = average': (2, 3, 30, 40)}
  names = overlays.legend_names(boxes, (40, 48))
  assert names == ['aesthetic (full frame)', 'attribute = average']
  assert overlays.box_colour(names[0]) == overlays.BOX_COLOURS['aesthetic']
  assert overlays.box_colour(names[1]) == overlays.BOX_COLOURS['attribute']


def test_concentration_figure_is_a_png():
  png = charts.concentration_figure({'trained': _concentration(0.8, 0.6),
                                      'untrained (control)': _concentration(0.7, 0.7, 1)}, 't')
  assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_concentration_figure_without_intervals():
  """eval.bootstrap_samples=0 (the config checks allow it) leaves every per-bucket interval
  None: the figure's TypeError ended aesthetics-evaluate (exit 1) after all its passes."""
  from aesthetics_jax.evaluation import study
  ent, scores = _entropies(0.8, 0.6, 0.6, 0)
  c = study.map_concentration(ent, scores, num_bootstrap=0)
  assert max(c['per_bucket_n']) >= charts.FEW_IMAGES and set(c['per_bucket_ci']) == {None}
  png = charts.concentration_figure({'trained': c}, 't')
  assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_our_figures_leave_the_users_matplotlib_alone(tmp_path):
  """Importing the API or drawing a chart changes no global matplotlib state: figures.py
  called matplotlib.use('Agg') on import, switching a notebook user's backend."""
  code = (
      'import sys, numpy as np\n'
      'import aesthetics_jax.api\n'
      'from aesthetics_jax.report import charts, overlays\n'
      "png = charts.curves_figure({'g': np.linspace(1, 0, 5)}, 't', 'p')\n"
      "assert png[:4] == b'\\x89PNG'\n"
      'overlays.overlay(np.zeros((8, 8, 3), np.uint8), np.ones((2, 2)))\n'
      'import matplotlib\n'
      "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
  r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, MPLBACKEND='svg', PYTHONPATH=str(
                         pathlib.Path(__file__).resolve().parents[1])), cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout.split() == ['svg', 'False']


def test_examples_panel_titles_do_not_run_into_each_other(monkeypatch):
  """One-line titles ran into their neighbours: 'id 578639: true 7.44, pred 5.84' under
  'aesthetic map; box (white) = full frame, avg (red)', the predicted score overprinted. In
  every row, each title now ends before the next one starts, with the figure as drawn."""
  figures = []
  real = charts._png  # pylint: disable=protected-access
  monkeypatch.setattr(charts, '_png', lambda fig: figures.append(fig) or real(fig))
  rng = np.random.default_rng(0)
  ex = dict(_example(rng, 7.44), image=rng.integers(0, 255, (40, 60, 3), dtype=np.uint8),
            aesthetic_map=rng.random((40, 60)).astype(np.float32),
            attribute_map=rng.random((40, 60)).astype(np.float32),
            boxes={'aesthetic': (0, 0, 40, 60), 'average': (4, 4, 35, 44),
                   'attribute': (0, 0, 40, 60)},
            caption='id 578639: true 7.44, pred 5.84', attribute_name='attribute map: Portraiture')
  charts.examples_figure([ex, ex], 'highest-rated')
  fig, = figures
  renderer = fig.canvas.get_renderer()
  rows = {}
  for ax in fig.axes:
    if ax.get_title():
      rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(
          ax.title.get_window_extent(renderer))
  assert len(rows) == 2
  for titles in rows.values():
    titles.sort(key=lambda e: e.x0)
    assert len(titles) == 4
    for left, right in zip(titles, titles[1:]):
      assert left.x1 <= right.x0, (left, right)


def test_a_long_tag_name_does_not_widen_the_examples_figure():
  """tags.txt is data: a 400-character tag name over the attribute map made the figure (saved
  with a tight bounding box) 2,452 px wide, its maps shown tiny; the name is shortened."""
  import io as std_io
  from PIL import Image
  rng = np.random.default_rng(0)
  width = lambda name: Image.open(std_io.BytesIO(charts.examples_figure(
      [dict(_example(rng, 5.0), attribute_name=f'attribute map: {name}')], 't'))).size[0]
  assert width('Macro' + 'x' * 400) == width('Macro')


def test_a_metrics_file_missing_a_concentration_group_renders(sections):
  """A metrics.json whose map_concentration lacks a group (edited by hand, another version's)
  was a KeyError deep in the report; the group shows n/a."""
  models, _, _ = sections
  s = copy.deepcopy(models[0])
  c = s['metrics'].setdefault('map_concentration', {})
  c.pop('mid', None)
  c['low_tail'] = 'x'
  c.setdefault('n_empty', 0)
  assert '<th>maps of</th>' in report_html.render([s])
