"""evaluate() on a tiny demo dataset with an initialised MobileNetV2 checkpoint: its metrics,
CSV, figures and explorer, and its report and explorer in a real browser (headless Chromium,
`browser` in conftest.py; skipped only without a Chromium binary)."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from browser import WIDTH, check_page, open_first_image
import checkpoint_fixture

REQUIRED = ('num_test_images', 'binary_accuracy', 'lcc_mean', 'srcc_mean', 'emd',
            'attribute_top1', 'attribute_top5', 'split_point_threshold', 'split_point_accuracy',
            'pointing_game_centre_baseline', 'mask_mass_area_baseline', 'faithfulness',
            'binary_accuracy_ci', 'global_normalisation', 'split_point_fit_n',
            'score_bucket_counts', 'bucket_map_counts', 'deletion_auc_gradcam',
            'pointing_game_upsampled_gradcam', 'deletion_auc_per_image_mean_eigencam',
            'map_concentration', 'map_concentration_untrained')
for _k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme'):
  REQUIRED += (_k, _k + '_per_image', _k + '_global')


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
  """`evaluate()` of an initialised MobileNetV2 on a tiny demo dataset (16 train / 10 test
  images at 64 px, two CAM methods): (workdir, metrics). Read, never changed, by every test
  here, the browser checks included; about a minute on 2 cores."""
  from aesthetics_jax.data import dataset
  from aesthetics_jax.data import demo as demo_data
  from aesthetics_jax.evaluation import run as eval_run
  tmp = tmp_path_factory.mktemp('evaluate')
  demo_data.generate(tmp / 'ava', 16, 10, seed=1)
  dataset.prepare(tmp / 'ava', tmp / 'tfds', 'style')
  config = checkpoint_fixture.smoke_config('mobilenet_v2', tmp / 'tfds', tmp / 'ava', 64)
  config.data.max_test_images = 0  # the whole (tiny) test split
  wd = checkpoint_fixture.write_init_checkpoint(tmp / 'mnv2', config)
  m = eval_run.evaluate(wd, overrides={
      'eval.cam_methods': ('gradcam', 'eigencam'), 'eval.faithfulness_images': 8,
      'eval.bootstrap_samples': 50, 'eval.faithfulness_steps': 4, 'eval.num_example_images': 2})
  return wd, m


def test_metrics_json_has_required_keys(evaluated):
  from aesthetics_jax.evaluation.evaluators import localization
  wd, m = evaluated
  on_disk = json.loads((wd / 'eval' / 'metrics.json').read_text())
  assert on_disk == json.loads(json.dumps(m))
  missing = [k for k in REQUIRED if k not in on_disk]
  assert not missing, missing
  assert on_disk['num_test_images'] == 10
  assert 0.0 <= on_disk['binary_accuracy'] <= 1.0
  assert on_disk['cam_intensity_pearson_all'] == on_disk['cam_intensity_pearson_all_per_image']
  assert set(on_disk['faithfulness']) == {'gradcam', 'eigencam'}
  for vals in on_disk['faithfulness'].values():
    for key in ('deletion_auc', 'insertion_auc', 'randomization_spearman',
                'deletion_auc_per_image_mean', 'baseline_gap'):
      assert key in vals, key
    # The headline AUC is the area under the normalised mean curve stored beside it.
    for mode in ('deletion', 'insertion'):
      curve = np.asarray(vals[f'{mode}_curve'], np.float64)
      assert curve.shape == (on_disk['faithfulness_steps'] + 1,)
      if vals[f'{mode}_auc'] is not None:
        assert vals[f'{mode}_auc'] == pytest.approx(np.trapezoid(curve, dx=1 / (curve.size - 1)))
  # Localisation on EVERY test image with a defect mask, not the faithfulness subset.
  assert set(on_disk['localization']) == {'gradcam', 'eigencam'}
  assert on_disk['localization_num_images'] == 10
  for vals in on_disk['localization'].values():
    assert vals['num_defective'] == on_disk['localization_num_defective'] > 0
    for key in ('pointing_game', 'pointing_game_upsampled', 'pointing_game_aesthetic_target',
                'mask_mass', 'box_iou', 'margin_over_centre', 'pointing_game_ci',
                'same_peak_low_aesthetic'):
      assert key in vals, key
    lo, hi = vals['pointing_game_ci']
    if vals['num_defective'] >= localization.MIN_CI_IMAGES:
      assert lo <= vals['pointing_game'] <= hi
    else:  # too few images to resample: no interval (NaN, written as null)
      assert lo is None and hi is None
  # EigenCAM's two targets give one map (it ignores the target): the same peak on every image
  # whose map has a positive peak; Grad-CAM's opposite targets seldom peak together.
  loc = on_disk['localization']
  assert loc['eigencam']['same_peak_low_aesthetic'] > 0.5
  assert loc['gradcam']['same_peak_low_aesthetic'] < loc['eigencam']['same_peak_low_aesthetic']
  assert 'training' in on_disk['split_point_fit']


def test_no_interval_from_too_few_images():
  """ScoreCAM, scored on the first few images, got [1.000, 1.000] from 2 images that both hit
  and read as the surest method of all; under MIN_CI_IMAGES images there is no interval."""
  from aesthetics_jax.evaluation.evaluators import localization
  ci = localization._bootstrap_ci  # pylint: disable=protected-access
  n = localization.MIN_CI_IMAGES
  assert all(v != v for v in ci(np.ones(n - 1), 1000, 0))
  assert ci(np.ones(n), 1000, 0) == [1.0, 1.0]
  lo, hi = ci(np.random.default_rng(0).integers(0, 2, 50).astype(float), 1000, 0)
  assert 0 < lo < hi < 1


def test_localization_controls_rebuild_the_start_of_training(evaluated):
  """The fixture's checkpoint IS the variables training starts from (seed init, no tweak), so
  the untrained control, rebuilt from the config alone, must give the very same maps: equal
  scores and a zero margin on every image. The negative control scores each map against
  another image's region of the same batch."""
  from aesthetics_jax.evaluation.evaluators import localization
  _, m = evaluated
  assert set(m['localization_controls']) == {'untrained', 'shuffled_masks'}
  assert m['localization_controls']['untrained'].startswith('the maps')
  for method, v in m['localization'].items():
    for k in ('pointing_game', 'box_iou', 'mask_mass'):
      assert v[f'{k}_untrained'] == pytest.approx(v[k], nan_ok=True), (method, k)
    assert v['margin_over_untrained'] == 0
    assert v['margin_over_untrained_ci'] == (
        [0, 0] if v['num_defective'] >= localization.MIN_CI_IMAGES else [None, None])
    assert 2 <= v['num_shuffled_masks'] <= v['num_defective']
    for k in ('pointing_game', 'box_iou', 'mask_mass'):
      assert f'{k}_shuffled_masks' in v and f'{k}_shuffled_masks_{method}' in m
  text = (evaluated[0] / 'eval' / 'report.html').read_text()
  assert 'margin over the untrained model' in text and 'negative control' in text
  # The intensity study of the untrained maps: the same maps here, rescaled by one constant
  # (this random head's maps are tiny), so the same Table 1 under global normalisation, which
  # a constant factor cannot change.
  u = m['intensity_untrained']
  assert u['map_rescale'] > 1
  for k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme',
            'split_point_accuracy', 'split_point_threshold'):
    got, want = u[f'{k}_global'], m[f'{k}_global']   # None: NaN (too few extremes)
    assert (got is None) == (want is None), k
    if want is not None:
      assert got == pytest.approx(want, rel=1e-4, abs=1e-6), k
  assert m['cam_intensity_pearson_all_global'] is not None
  # This random head's maps are tiny: the trained-model study says its per-image column is
  # distorted (the untrained control is rescaled, so it is not).
  assert m['global_normalisation']['test_max'] < 1e-5
  assert m['tiny_maps_warning'].startswith('the test maps peak at ')
  assert 'The same study, untrained model' in text
  from aesthetics_jax.evaluation import run as eval_run
  line = eval_run.summary(m)   # what aesthetics-evaluate prints
  assert line['cam_intensity_pearson_all_untrained'] == u['cam_intensity_pearson_all_per_image']
  assert line['pointing_game_gradcam'] == m['localization']['gradcam']['pointing_game']
  assert {'pointing_game_untrained_gradcam', 'pointing_game_shuffled_masks_gradcam',
          'binary_accuracy'} <= set(line)
  assert next(iter(line.items())) == ('step', m['step'])  # which checkpoint, first


def test_derangement_moves_every_region_to_another_image():
  from aesthetics_jax.evaluation.evaluators import localization
  rng = np.random.default_rng(0)
  for valid in ([1, 1, 0, 1, 0, 1, 1], [0, 1, 1], [1, 0, 0], [0, 0], [1] * 32):
    valid = np.asarray(valid, bool)
    for _ in range(20):
      p = localization._derangement(valid, rng)
      idx = np.flatnonzero(valid)
      assert sorted(p) == list(range(valid.size))                 # a permutation
      assert (p[~valid] == np.flatnonzero(~valid)).all()          # no region: kept
      if idx.size >= 2:
        assert (p[idx] != idx).all() and set(p[idx]) == set(idx)  # regions only, never its own
      else:
        assert (p == np.arange(valid.size)).all()                 # a lone region sits out


def test_untrained_control_is_skipped_with_a_reason_when_weights_are_gone(tmp_path):
  import jax
  from aesthetics_jax import models, parallel
  from aesthetics_jax.evaluation import run as eval_run
  config = checkpoint_fixture.smoke_config('mobilenet_v2')
  model = models.create_model(config.model)
  mesh = parallel.make_mesh()
  missing = tmp_path / 'imagenet.npz'
  config.model.init_weights = str(missing)
  v, note = eval_run._untrained_variables(model, config, mesh, str(tmp_path), tmp_path)
  assert v is None and note.startswith('skipped:') and str(missing) in note
  assert '\n' not in note
  config.eval.localization_controls = config.eval.intensity_untrained = False
  assert eval_run._untrained_variables(model, config, mesh, str(tmp_path), tmp_path) == (None, '')
  config.eval.localization_controls = True
  assert eval_run._untrained_variables(model, config, mesh, '', tmp_path) == (None, '')  # no masks
  config.eval.intensity_untrained = True   # the intensity study's control needs no masks
  config.model.init_weights = ''
  v, note = eval_run._untrained_variables(model, config, mesh, '', tmp_path)
  assert note == '' and jax.tree.structure(v) == jax.tree.structure(
      models.init_variables(model, int(config.seed), int(config.input.image_size)))


@pytest.mark.parametrize('overrides, expect', [
    ({'eval.box_threshold': 1.5}, 'config.eval.box_threshold=1.5: must be in (0, 1)'),
    ({'eval.box_threshold': float('nan')}, 'config.eval.box_threshold=nan: must be in (0, 1)'),
    ({'eval.cam_methods': ('gradcam', 'bogus')}, "unknown CAM method 'bogus'"),
    # Was a ValueError after the data loaded: exit 1 (a failure), the key not named.
    ({'eval.cam_layers': ('features.99',)},
     "config.eval.cam_layers=('features.99',): CAM layer 'features.99' is not a module"),
    ({'eval.faithfulness_steps': 0}, 'config.eval.faithfulness_steps=0: must be an integer'),
    # An OverflowError traceback after the test pass.
    ({'eval.faithfulness_steps': 10 ** 11}, 'config.eval.faithfulness_steps=100000000000: '
     'more steps than the 4096 pixels of a 64-px image (config.input.image_size) repeat'),
    # After the test pass: 'out of memory ... lower --config.eval.batch_size'.
    ({'eval.bootstrap_samples': 10 ** 11}, 'config.eval.bootstrap_samples=100000000000: '
     '100000000000 resamples of 16 images take at least 1.19e+04 GiB and this machine has'),
    # A negative ScoreCAM image count: ScoreCAM silently left out.
    ({'eval.faithfulness_scorecam_images': -1},
     'config.eval.faithfulness_scorecam_images=-1: must be an integer >= 0'),
    ({'eval.masks_dir': '{tmp}/named_wrong'}, 'no mask for any of the 10 test images: it '
     'holds 1 .png files (e.g. 1_mask.png); name each mask <image_id>.png'),
    ({'eval.masks_dir': '{tmp}/file.txt'}, 'file.txt: is a file, not a folder; pass'),
    ({'eval.masks_dir': '{tmp}/missing'}, 'missing: masks folder not found; pass'),
    # Another subset's test split holds this model's training images; a misspelled key
    # changed nothing; a model key would rebuild another model around the weights.
    ({'data.subset': 'all'}, "data.subset='all', but the model was trained on 'style'"),
    ({'eval.box_treshold': 0.3}, 'did you mean eval.box_threshold'),
    # Was 'no prepared dataset; run `aesthetics-prepare-data ... --data_dir= ...`'.
    ({'data.data_dir': ''}, 'config.data.data_dir is empty; pass --config.data.data_dir='),
    ({'model.width_mult': 1.0}, 'model.width_mult cannot change here'),
])
def test_bad_settings_fail_before_any_image_is_read(evaluated, tmp_path, monkeypatch,
                                                    overrides, expect):
  """One line, raised before the test pass (which used to run first: minutes on real AVA) and
  before anything is written; a box threshold of 1.5 used to box the whole frame silently and
  a masks folder matching no image gave null metrics and exit 0."""
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming
  wd, _ = evaluated
  (tmp_path / 'named_wrong').mkdir()
  (tmp_path / 'named_wrong' / '1_mask.png').write_bytes(b'')
  (tmp_path / 'file.txt').write_text('x')
  before = (wd / 'eval' / 'metrics.json').read_bytes()

  def no_pass(*a, **k):
    raise AssertionError('the test pass ran before the check')

  monkeypatch.setattr(streaming, 'collect', no_pass)
  overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
               for k, v in overrides.items()}
  with pytest.raises(eval_run.EvalConfigError) as e:
    eval_run.evaluate(wd, overrides=overrides)
  assert expect in str(e.value) and '\n' not in str(e.value)
  assert (wd / 'eval' / 'metrics.json').read_bytes() == before


def test_eval_batch_size_is_capped_at_the_largest_pass(evaluated, monkeypatch):
  """Every batch is padded to the batch size: --config.eval.batch_size=20000 evaluated 8 test
  images in 3.5 GB and 4.5x the time. The fixture's largest pass: its 16 training images."""
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming
  wd, _ = evaluated
  seen = []

  class Stop(Exception):
    pass

  def first_pass(forward, summarize, variables, batches, *a, **k):
    seen.append(int(batches.keywords['config'].eval.batch_size))
    raise Stop  # nothing more to see

  monkeypatch.setattr(streaming, 'collect', first_pass)
  with pytest.raises(Stop):
    eval_run.evaluate(wd, overrides={'eval.batch_size': 20000})
  assert seen == [16]


def test_unreadable_mask_counts_as_no_region_and_is_named(tmp_path):
  from PIL import Image
  from aesthetics_jax.evaluation.evaluators import localization
  Image.new('L', (8, 8), 255).save(tmp_path / '1.png')
  (tmp_path / '2.png').write_bytes(b'not a png')
  errors = {}
  masks = localization.load_masks(str(tmp_path), [1, 2, 3], 4, errors)
  assert masks[0].all() and not masks[1].any() and not masks[2].any()  # 3: no file, no region
  assert list(errors) == [str(tmp_path / '2.png')]
  assert errors[str(tmp_path / '2.png')].startswith(f'{tmp_path / "2.png"}: not an image')
  with pytest.raises(ValueError, match='not an image'):  # without `errors`: raised
    localization.load_masks(str(tmp_path), [2], 4)
  assert localization.matching_masks(str(tmp_path), [1, 2, 3]) == 2


def test_per_image_csv_matches_metrics(evaluated):
  wd, m = evaluated
  with open(wd / 'eval' / 'per_image.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == m['num_test_images']
  acc = np.mean([int(r['label']) == int(r['pred']) for r in rows])
  assert abs(acc - m['binary_accuracy']) < 1e-6
  # Empty maps (this untrained model has some) get no box, never a silent full frame.
  assert sum(r['map'] == 'empty' for r in rows) == m['empty_maps']
  assert m['distinct_boxes'] <= m['num_test_images'] - m['empty_maps']
  assert m['full_frame_boxes'] == sum(
      r['box_aesthetic'].split() == ['0', '0', r['orig_height'], r['orig_width']] for r in rows)
  for r in rows:
    assert r['map'] in ('ok', 'empty')
    if r['map'] == 'empty':
      assert r['box_aesthetic'] == ''
      continue
    y0, x0, y1, x1 = map(int, r['box_aesthetic'].split())
    assert 0 <= y0 < y1 <= int(r['orig_height']) and 0 <= x0 < x1 <= int(r['orig_width'])
    assert 0.0 <= float(r['intensity_per_image']) <= 1.0
    assert 0.0 <= float(r['intensity_global']) <= 1.0 + 1e-6
  assert len({r['image_id'] for r in rows}) == len(rows)
  # map_entropy: blank exactly for the empty maps; the metric's groups average the column.
  ent = np.array([float(r['map_entropy']) if r['map_entropy'] else np.nan for r in rows])
  assert [np.isnan(e) for e in ent] == [r['map'] == 'empty' for r in rows]
  assert np.all((ent[np.isfinite(ent)] >= 0) & (ent[np.isfinite(ent)] <= 1))
  c = m['map_concentration']
  true = np.array([float(r['true_mean']) for r in rows])
  mid = (true >= 4.5) & (true <= 6.5) & np.isfinite(ent)
  assert c['n_empty'] == m['empty_maps'] and c['mid']['n'] == int(mid.sum())
  if mid.any():
    assert c['mid']['mean'] == pytest.approx(ent[mid].mean(), abs=1e-4)
  # The fixture's checkpoint is the untrained model: the control has the same maps (rescaled by
  # one constant, which the entropy ignores), so the paired margin is 0.
  assert c['margin_over_untrained'] == pytest.approx(0, abs=1e-4)
  assert m['map_concentration_untrained']['mid']['n'] == c['mid']['n']


def test_predict_gives_the_boxes_of_per_image_csv(evaluated):
  """predict (and the API) boxed the map in the image's aspect, per_image.csv on the model's
  S×S grid: on the demo's 300 test images 624 of 900 MobileNetV2 boxes differed, up to 163 px
  (a region near the threshold in one grid and not the other)."""
  from aesthetics_jax.evaluation import predictor
  wd, _ = evaluated
  with open(wd / 'eval' / 'per_image.csv') as f:
    rows = list(csv.DictReader(f))
  images = wd.parent / 'ava' / 'images'
  got = list(predictor.Predictor(wd).predict_files(
      [str(images / f'{r["image_id"]}.jpg') for r in rows]))
  for r, p in zip(rows, got):
    assert abs(p['mean_score'] - float(r['pred_mean'])) <= 2e-4, r['image_id']
    for k in ('aesthetic', 'attribute', 'average'):
      b = p['boxes'].get(k)
      assert ([b['y0'], b['x0'], b['y1'], b['x1']] if b else []) == [
          int(v) for v in r[f'box_{k}'].split()], (r['image_id'], k)


def test_figures_and_report(evaluated):
  wd, _ = evaluated
  figs = {p.name for p in (wd / 'eval' / 'figures').glob('*.png')}
  for name in ('examples_high.png', 'examples_low.png', 'intensity_scatter_per_image.png',
               'intensity_scatter_global.png', 'bucket_maps.png', 'score_bucket_maps.png',
               'faithfulness_deletion.png', 'faithfulness_insertion.png', 'map_entropy.png'):
    assert name in figs, name
  html = (wd / 'eval' / 'report.html').read_text()
  assert 'id="demo-banner"' in html  # the demo root (defect_masks/) is detected
  assert html.count('data:image/png;base64,') >= len(figs)


def test_explorer_written_and_consistent(evaluated):
  from aesthetics_jax.report import explorer
  wd, m = evaluated
  d = wd / 'eval' / 'explorer'
  index = explorer.read_index(d / 'index.html')
  n = m['num_test_images']
  assert m['explorer_images'] == len(index['rows']) == n
  assert index['methods'] == m['explorer_methods'] == ['gradcam', 'eigencam']
  assert len(index['targets']) == 13 and index['targets'][-1] == 'top_tag'
  assert index['targets'][:2] == ['aesthetic', 'low'] and index['regions'] is True
  assert len(list((d / 'thumbs').glob('*.jpg'))) == n
  rows = [dict(zip(index['columns'], r)) for r in index['rows']]
  chunks = {}
  for p in (d / 'maps').glob('*.js'):
    chunks.update(explorer.read_chunk(p))
  assert sorted(chunks) == list(range(n))
  with open(wd / 'eval' / 'per_image.csv') as f:
    csv_rows = list(csv.DictReader(f))
  for r, c in zip(rows, csv_rows):
    # the explorer shows the evaluation's own maps: same empty flags, ids and scores
    assert r['image_id'] == int(c['image_id']) and r['empty'] == (c['map'] == 'empty')
    assert abs(r['true'] - float(c['true_mean'])) < 1e-3
    rec = chunks[r['row']]
    assert rec['maps']['gradcam'].shape[0] == 13 and rec['hw'] == [int(c['orig_height']),
                                                                   int(c['orig_width'])]
    assert rec['empty']['gradcam'][0] == r['empty']
    # The same boxes as the CSV's (they were taken on a 128 px grid, the CSV's on S×S).
    shown = {k: np.round(np.array(v) * (rec['hw'] * 2)).astype(int).tolist()
             for k, v in rec['boxes']['gradcam'].items()}
    for k in ('aesthetic', 'attribute', 'average'):
      assert shown.get(k) == ([int(v) for v in c[f'box_{k}'].split()] or None), (k, r['row'])
  # Image by image, the regions and low-map peaks the explorer shows give back the
  # localisation table: the same images with a region, the same pointing game per method.
  with_region = [r['row'] for r in rows if r['region']]
  assert len(with_region) == m['localization_num_defective'] > 0
  for method in ('gradcam', 'eigencam'):
    hits = [chunks[i]['peaks'][method][2] for i in with_region]
    assert np.mean(hits) == pytest.approx(m['localization'][method]['pointing_game']), method
  assert [r['hit'] for r in rows if r['region']] == [chunks[i]['peaks']['gradcam'][2]
                                                     for i in with_region]
  assert not list(wd.glob('eval/.explorer*'))  # no temporary folder left behind
  assert 'explorer/index.html' in (wd / 'eval' / 'report.html').read_text()


# --- The report and the explorer in a real browser (tests/browser.py) ------------------------


def test_report_renders_cleanly(browser, evaluated):
  wd, _ = evaluated
  page = browser.new_page(WIDTH)
  page.goto(wd / 'eval' / 'report.html')
  assert page.eval('document.images.length') >= 8
  check_page(page, 'report.html')
  href = page.eval('document.querySelector(".explorer-link a").getAttribute("href")')
  assert (wd / 'eval' / href).is_file()


def test_explorer_grid_and_maps(browser, evaluated):
  from aesthetics_jax.report import explorer
  wd, m = evaluated
  path = wd / 'eval' / 'explorer' / 'index.html'
  index = explorer.read_index(path)
  page = browser.new_page(WIDTH)
  page.goto(path)
  assert page.eval('document.querySelectorAll(".card").length') == m['num_test_images']
  check_page(page, 'explorer grid')
  open_first_image(page, len(index['methods']) * len(index['targets']))
  check_page(page, 'explorer detail')
  # Sorting by true score, ascending, puts the lowest-rated image first.
  page.eval('(() => { const s = document.getElementById("sort"); s.value = "true";'
            ' document.getElementById("dir").value = "1";'
            ' s.dispatchEvent(new Event("input")); })()')
  first = page.eval('Number(document.querySelector(".card").dataset.row)')
  col = index['columns'].index('true')
  assert index['rows'][first][col] == min(r[col] for r in index['rows'])


def test_missing_dataset_names_the_flag_for_a_moved_one(evaluated, tmp_path):
  from aesthetics_jax.evaluation import run as eval_run
  wd, _ = evaluated
  with pytest.raises(FileNotFoundError, match=r'no prepared dataset ava/style; .*if it moved, '
                     r'pass its new folder: --config\.data\.data_dir=DIR') as e:
    eval_run.evaluate(wd, overrides={'data.data_dir': str(tmp_path / 'gone')})
  assert '\n' not in str(e.value)
  # Exit 2, as aesthetics-train's for an unprepared data_dir (the README's rule): it was 1.
  from aesthetics_jax.cli import common
  assert common.exit_code(e.value) == common.EXIT_USAGE


def test_second_evaluation_of_one_workdir_is_refused(evaluated):
  """Two evaluations at once left W/eval with files of both (each file whole, the set mixed)."""
  import os
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.train import checkpoints, workdir
  wd, _ = evaluated
  before = (wd / 'eval' / 'metrics.json').read_bytes()
  first = workdir.WorkdirLock(wd / 'eval', holder='aesthetics-evaluate')
  first.acquire()  # as a live evaluation holds it
  try:
    with pytest.raises(checkpoints.WorkdirBusyError, match=(
        f'eval is in use by another aesthetics-evaluate \\(pid {os.getpid()} ')) as e:
      eval_run.evaluate(wd)
    assert '\n' not in str(e.value)
  finally:
    first.release()
  assert (wd / 'eval' / 'metrics.json').read_bytes() == before
  assert not (wd / 'eval' / '.lock').exists()


def test_evaluating_a_run_in_training_says_so(evaluated, caplog):
  """aesthetics-evaluate during training evaluated an intermediate checkpoint with no word
  (metrics.json's step 7 of 40). A warning now names the trainer and the step; the run's own
  evaluation lock stops this one before any work."""
  import os
  import socket
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.train import checkpoints, workdir
  wd, metrics = evaluated
  assert workdir.training_now(wd) is None
  trainer, busy = workdir.WorkdirLock(wd), workdir.WorkdirLock(wd / 'eval')
  trainer.acquire()  # as a live trainer holds it
  busy.acquire()
  try:
    assert workdir.training_now(wd)['pid'] == os.getpid()
    with caplog.at_level('WARNING'), pytest.raises(checkpoints.WorkdirBusyError):
      eval_run.evaluate(wd)
  finally:
    busy.release()
    trainer.release()
  said = [r.getMessage() for r in caplog.records if 'being trained now' in r.getMessage()]
  assert len(said) == 1 and said[0].startswith(
      f'{wd} is being trained now (pid {os.getpid()} on {socket.gethostname()}, since ')
  assert said[0].endswith(f'): this evaluates its checkpoint {metrics["step"]}, not the '
                          'finished run')
  assert workdir.training_now(wd) is None


def test_data_from_another_ava_root_is_refused(evaluated, monkeypatch):
  """The trainer records its data's fingerprint (W/dataset.json); a dataset prepared from
  another AVA root may hold the model's training images in its test split."""
  import json
  from aesthetics_jax.data import dataset
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming
  wd, _ = evaluated
  path = wd / dataset.IDENTITY_FILE
  config = json.loads((wd / 'config.json').read_text())
  own = dataset.identity(config['data']['data_dir'], 'style')
  assert own['ava_fingerprint']

  def no_pass(*a, **k):
    raise AssertionError('the test pass ran before the check')

  monkeypatch.setattr(streaming, 'collect', no_pass)
  try:
    path.write_text(json.dumps(dict(own, data_dir='/elsewhere', ava_fingerprint='0' * 64)))
    with pytest.raises(eval_run.EvalConfigError, match=(
        r'was prepared from another AVA root .* than the model.s training data \(/elsewhere\): '
        r'its test split may hold images the model trained on')) as e:
      eval_run.evaluate(wd)
    assert '\n' not in str(e.value)
    # The same data (a moved copy keeps its fingerprint) passes the check.
    assert dataset.identity_mismatch(dict(own, data_dir='/elsewhere'), own) == ''
    # A damaged record: the check was skipped without a word.
    path.write_text('{"data_dir": ')
    with pytest.raises(eval_run.EvalConfigError, match=(
        r'dataset.json: not valid JSON .*; it records the data the model was trained on: '
        r'restore it from a copy, or delete it to evaluate unchecked')):
      eval_run.evaluate(wd)
  finally:
    path.unlink(missing_ok=True)


def test_two_cpu_devices_give_the_same_evaluation(evaluated, tmp_path):
  """`evaluate()` over 2 CPU devices (a batch sharded over the mesh; a fresh process, as XLA
  reads its device count at start-up) writes the per-image rows of the 1-device run. Its boxes
  used to come from a `pure_callback` inside the multi-device computation, which aborted
  there. With EigenCAM among the methods (a callback still) the passes over every CAM method
  run on one device, the rest on both; with EigenCAM as the method, all of them on one."""
  import os
  import shutil
  import subprocess
  import sys
  wd, _ = evaluated
  two = tmp_path / 'two'
  shutil.copytree(wd, two, ignore=shutil.ignore_patterns('eval'))
  # An odd batch, which 2 devices cannot split, used to stop the run (the user did not
  # choose evaluate's device count): it is rounded up, the rows the same.
  overrides = {'eval.cam_methods': ('gradcam', 'eigencam'), 'eval.faithfulness_images': 8,
               'eval.bootstrap_samples': 50, 'eval.faithfulness_steps': 4,
               'eval.num_example_images': 2, 'eval.batch_size': 3}
  code = ('import json, sys, jax; from aesthetics_jax.evaluation import run; '
          'from aesthetics_jax.train import restore; '
          'assert jax.device_count() == 2, jax.devices(); '
          'm = run.evaluate(sys.argv[1], overrides=json.loads(sys.argv[2])); '
          'c = restore.load_config(sys.argv[1]); '
          "c.eval.cam_methods = ('gradcam', 'EigenCAM'); "
          'sizes = [m.size for m in run.eval_meshes(c.eval)]; '
          "c.eval.cam_method = 'EigenCAM'; "
          'sizes += [m.size for m in run.eval_meshes(c.eval)]; '
          'print(json.dumps([m["eval_devices"], m["eval_cam_methods_devices"], '
          'run.eval_mesh(c.eval).size, sizes]))')
  env = {**os.environ, 'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +
                                     ' --xla_force_host_platform_device_count=2').strip()}
  p = subprocess.run([sys.executable, '-c', code, str(two), json.dumps(overrides)], env=env,
                     capture_output=True, text=True, timeout=400)
  assert p.returncode == 0, p.stderr[-3000:]
  # EigenCAM as eval.cam_method puts the test pass, intensity study and figures on one device.
  assert json.loads(p.stdout.strip().splitlines()[-1]) == [2, 1, 1, [2, 1, 1, 1]]
  with open(wd / 'eval' / 'per_image.csv') as f:
    one_rows = list(csv.DictReader(f))
  with open(two / 'eval' / 'per_image.csv') as f:
    two_rows = list(csv.DictReader(f))
  assert len(two_rows) == len(one_rows) == 10
  for a, b in zip(one_rows, two_rows):
    for k in a:
      if k.startswith('box') or k in ('image_id', 'pred', 'label', 'map'):
        assert a[k] == b[k], (k, a, b)
      elif a[k] and a[k].replace('.', '', 1).replace('-', '', 1).replace('e', '', 1).isdigit():
        assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-5), (k, a, b)


def test_cli_says_when_eigencam_keeps_evaluation_on_one_device(evaluated, tmp_path):
  """`aesthetics-evaluate --config.eval.cam_method=eigencam` with the user's own device count
  of 2 runs every pass on one device (`run.eval_meshes`) and must say so on stderr: the
  command hid every warning (absl verbosity ERROR), so the user's devices went unused
  without a word."""
  import os
  import shutil
  import subprocess
  import sys
  from pathlib import Path
  wd, _ = evaluated
  two = tmp_path / 'two'
  shutil.copytree(wd, two, ignore=shutil.ignore_patterns('eval'))
  env = {**os.environ, 'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +
                                     ' --xla_force_host_platform_device_count=2').strip(),
         'JAX_PLATFORMS': 'cpu'}
  # The line comes from the meshes (`run.eval_meshes`), before any pass: the passes over
  # every CAM method on one device are `test_two_cpu_devices_give_the_same_evaluation`'s,
  # so they are off here (each cost seconds of tracing on 2 cores).
  args = [f'--workdir={two}', '--config.eval.cam_method=eigencam',
          "--config.eval.cam_methods=('eigencam',)", '--config.eval.faithfulness_images=0',
          '--config.eval.explorer=False', '--config.eval.localization_controls=False',
          '--config.eval.intensity_untrained=False', '--config.eval.bootstrap_samples=20',
          '--config.eval.num_example_images=1']
  p = subprocess.run([sys.executable, '-m', 'launch.evaluate', *args], env=env,
                     cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                     timeout=400)
  assert p.returncode == 0, p.stderr[-3000:]
  assert ('every evaluation pass runs on 1 of the 2 CPU devices: EigenCAM (eval.cam_method) '
          'runs a host callback that deadlocks across CPU devices') in p.stderr, p.stderr[-3000:]
  assert json.loads((two / 'eval' / 'metrics.json').read_text())['eval_devices'] == 1


def test_re_evaluating_a_model_of_a_job_says_its_combined_report_is_stale(evaluated,
                                                                          tmp_path):
  """Re-evaluating a demo model (as the README suggests) left W/report.html showing the
  earlier numbers while its explorer link opened the new evaluation's explorer."""
  import shutil
  import subprocess
  import sys
  from pathlib import Path
  wd, _ = evaluated
  job = tmp_path / 'job'
  shutil.copytree(wd, job / 'mobilenet_v2', ignore=shutil.ignore_patterns('eval'))
  (job / 'report.html').write_text('<a href="mobilenet_v2/eval/explorer/index.html">')
  args = ['--config.eval.cam_method=gradcam', "--config.eval.cam_methods=('gradcam',)",
          '--config.eval.faithfulness_images=0', '--config.eval.explorer=False',
          '--config.eval.bootstrap_samples=20', '--config.eval.num_example_images=0']
  run = lambda w: subprocess.run(  # noqa: E731
      [sys.executable, '-m', 'launch.evaluate', f'--workdir={w}', *args],
      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=400)
  p = run(job / 'mobilenet_v2')
  assert p.returncode == 0, p.stderr[-3000:]
  assert (f'evaluate: warning: {job / "report.html"} (the report of the job this model belongs '
          'to) still shows its earlier evaluation') in p.stderr, p.stderr[-3000:]
  shutil.move(job / 'mobilenet_v2', tmp_path / 'alone')
  p = run(tmp_path / 'alone')  # no job's report beside it: no line
  assert p.returncode == 0 and 'still shows' not in p.stderr, p.stderr[-3000:]


def test_report_links_only_the_explorer_its_evaluation_wrote(tmp_path):
  """A rerun with --config.eval.explorer=False kept the earlier evaluation's explorer (maps of
  another checkpoint, perhaps) and the report linked it: 'all — test images'."""
  from aesthetics_jax.evaluation import run as eval_run
  config = checkpoint_fixture.smoke_config('vgg16')
  index = tmp_path / 'eval' / 'explorer' / 'index.html'
  index.parent.mkdir(parents=True)
  index.write_text('<!DOCTYPE html>')  # an earlier evaluation's
  assert eval_run.model_section(tmp_path, {'step': 2}, {}, config)['explorer'] is None
  section = eval_run.model_section(tmp_path, {'step': 2, 'explorer_images': 3}, {}, config)
  assert section['explorer'] == str(index)


def test_figures_an_evaluation_did_not_draw_are_not_left_behind(tmp_path):
  """A rerun that drew no faithfulness curves (--config.eval.faithfulness_images=0) left the
  earlier run's faithfulness_*.png in W/eval/figures, and the demo's and paper_run's combined
  report (every PNG there) embedded them beside metrics without their numbers."""
  from aesthetics_jax.evaluation import run as eval_run
  folder = tmp_path / 'eval' / 'figures'
  folder.mkdir(parents=True)
  (folder / 'faithfulness_deletion.png').write_bytes(b'earlier run')
  (folder / 'notes.txt').write_text('a user file, not a figure')
  eval_run.write_figures(folder, {'examples_high': b'png'})
  assert sorted(p.name for p in folder.iterdir()) == ['examples_high.png', 'notes.txt']


def test_a_disk_filling_at_the_last_files_leaves_the_whole_old_evaluation(evaluated, tmp_path,
                                                                          monkeypatch):
  """An evaluation whose disk filled at metrics.json (after the explorer, the CSV and the
  figures) left W/eval mixed: a new explorer, CSV and figures beside the old metrics and
  report. Its files now land together, after all of them are written: the old evaluation
  stays whole, and nothing of the new one (no temporary file) is left."""
  import errno
  import shutil
  from aesthetics_jax import io as io_lib
  from aesthetics_jax.evaluation import run as eval_run
  src, _ = evaluated
  wd = tmp_path / src.name
  shutil.copytree(src, wd)
  ev = wd / 'eval'
  marked = [ev / 'metrics.json', ev / 'per_image.csv', ev / 'report.html',
            ev / 'explorer' / 'index.html', next((ev / 'figures').glob('*.png'))]
  for f in marked:  # what only the old evaluation's files hold
    f.write_bytes(f.read_bytes() + b'\n<!-- the earlier evaluation -->\n')
  before = {p: p.read_bytes() for p in ev.rglob('*') if p.is_file()}
  write_beside = io_lib._write_beside

  def full_at_metrics(p, *a, **kw):
    if str(p).endswith('metrics.json'):
      raise OSError(errno.ENOSPC, 'No space left on device', str(p))
    return write_beside(p, *a, **kw)
  monkeypatch.setattr(io_lib, '_write_beside', full_at_metrics)
  with pytest.raises(OSError, match='No space left'):
    eval_run.evaluate(wd, overrides={'eval.cam_methods': ('gradcam',),
                                     'eval.faithfulness_images': 0,
                                     'eval.localization_controls': False,
                                     'eval.intensity_untrained': False,
                                     'eval.bootstrap_samples': 50,
                                     'eval.num_example_images': 1})
  after = {p: p.read_bytes() for p in ev.rglob('*') if p.is_file() and p.name != '.lock'}
  assert after == before
  assert not [p for p in wd.rglob('.*') if p.name != '.lock' and 'checkpoints' not in str(p)]


def test_an_evaluation_killed_while_its_files_land_says_so_and_a_rerun_cleans_up(
    evaluated, tmp_path, monkeypatch):
  """kill -9 between two of the renames that land an evaluation left eval/ mixing two
  evaluations (new CSV and figures, old metrics and report) without a word, and the hidden
  temporary files of the killed process stayed after the rerun that replaced their targets."""
  import shutil
  import subprocess
  from aesthetics_jax import io as io_lib
  from aesthetics_jax.evaluation import run as eval_run
  src, _ = evaluated
  wd = tmp_path / src.name
  shutil.copytree(src, wd)
  ev = wd / 'eval'
  gone = subprocess.Popen(['true'])
  gone.wait()
  dead = [ev / f'.report.html.{gone.pid}.0badc0de.tmp',
          ev / 'figures' / f'.examples_high.png.{gone.pid}.0badc0de.tmp']
  for f in dead:
    f.write_bytes(b'a killed evaluation\'s')
  mine = ev / f'.metrics.json.{os.getpid()}.0badc0de.tmp'  # a live writer's: kept
  mine.write_bytes(b'')
  small = {'eval.cam_methods': ('gradcam',), 'eval.faithfulness_images': 0,
           'eval.localization_controls': False, 'eval.intensity_untrained': False,
           'eval.bootstrap_samples': 50, 'eval.num_example_images': 1}
  real, landed = io_lib._rename, []

  def killed(tmp, out):  # lands one file after the marker, then stops as kill -9 would
    if (ev / eval_run.INCOMPLETE).exists() and Path(out).name != eval_run.INCOMPLETE:
      if landed:
        raise KeyboardInterrupt
      landed.append(out)
    real(tmp, out)
  monkeypatch.setattr(io_lib, '_rename', killed)
  with pytest.raises(KeyboardInterrupt):
    eval_run.evaluate(wd, overrides=small)
  assert landed and (ev / eval_run.INCOMPLETE).read_text() == eval_run.INCOMPLETE_TEXT
  assert not any(f.exists() for f in dead) and mine.exists()  # cleaned when it started
  monkeypatch.setattr(io_lib, '_rename', real)
  for f in dead:
    f.write_bytes(b'a killed evaluation\'s')
  eval_run.evaluate(wd, overrides=small)
  assert not (ev / eval_run.INCOMPLETE).exists() and not any(f.exists() for f in dead)


def test_a_one_cell_cam_grid_is_named_with_a_finer_layer(tmp_path, monkeypatch, caplog):
  """The paper MobileNetV2's default layer (features.18) is 1x1 at the smoke configs' 32 px:
  every map was empty and the CAM study all null with no line saying why (predict said it)."""
  from tiny_ava import prepare_tiny  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming

  class Stop(Exception):
    pass

  def no_pass(*a, **k):
    raise Stop  # the line comes before the first pass

  data = prepare_tiny(tmp_path / 'tiny', num_train=8, num_test=4)
  from aesthetics_jax.configs import mobilenet_v2_emd
  config = mobilenet_v2_emd.get_config('smoke')  # the encoder's output: cam_layers ()
  config.data.data_dir = str(data)
  wd = checkpoint_fixture.write_init_checkpoint(tmp_path / 'w', config)
  monkeypatch.setattr(streaming, 'collect', no_pass)
  with pytest.raises(Stop):
    eval_run.evaluate(wd)
  lines = [r.getMessage() for r in caplog.records if 'gives a 1x1 map' in r.getMessage()]
  assert len(lines) == 1 and 'CAM layer features.18' in lines[0], caplog.text
  assert "pass config.eval.cam_layers=('features.13',) (2x2)" in lines[0]
  # A layer whose grid is finer: no line.
  caplog.clear()
  with pytest.raises(Stop):
    eval_run.evaluate(wd, overrides={'eval.cam_layers': ('features.13',)})
  assert 'gives a 1x1 map' not in caplog.text


def test_a_one_cell_cam_layer_is_said_in_the_report_and_has_no_shared_peak(tmp_path):
  """A 1x1 CAM layer's warning reached the terminal only: the report showed its intensity
  study and a 'same peak' of 1.000 for constant maps (argmax's first cell, shared by both)."""
  from tiny_ava import prepare_tiny  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.configs import mobilenet_v2_emd
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation.evaluators import localization
  ones = np.ones((3, 1, 1), np.float32)
  assert not localization.same_peak(ones, ones).any()
  flat = np.full((3, 4, 4), 0.5, np.float32)
  assert not localization.same_peak(flat, flat).any()
  peaked = np.zeros((3, 4, 4), np.float32)
  peaked[:, 1, 2] = 1.0
  assert localization.same_peak(peaked, peaked).all()
  config = mobilenet_v2_emd.get_config('smoke')  # features.18: 1x1 at 32 px
  config.data.data_dir = str(prepare_tiny(tmp_path / 'tiny', num_train=8, num_test=4))
  wd = checkpoint_fixture.write_init_checkpoint(tmp_path / 'w', config)
  m = eval_run.evaluate(wd, overrides={'eval.cam_methods': ('gradcam',),
                                       'eval.bootstrap_samples': 20,
                                       'eval.num_example_images': 0})
  assert m['cam_layer_note'].startswith('CAM layer features.18 gives a 1x1 map'), m
  html = (wd / 'eval' / 'report.html').read_text()
  assert 'Warning: CAM layer features.18 gives a 1x1 map' in html
  assert 'the CAM numbers below measure nothing' in html


def test_cam_method_spellings_reach_the_cam_code_canonical(evaluated, monkeypatch):
  """The checks accepted --config.eval.cam_method=gradcam++, then the test pass stopped with
  "unknown CAM method 'gradcam++'" (exit 1)."""
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming
  wd, _ = evaluated
  seen = []

  class Stop(Exception):
    pass

  def first_pass(forward, summarize, variables, batches, *a, **k):
    seen.append(batches.keywords['config'].eval)
    raise Stop

  monkeypatch.setattr(streaming, 'collect', first_pass)
  with pytest.raises(Stop):
    eval_run.evaluate(wd, overrides={'eval.cam_method': 'gradcam++',
                                     'eval.cam_methods': ('Grad-CAM++', 'gradcampp', 'gradcam')})
  assert seen[0].cam_method == 'gradcampp'
  assert tuple(seen[0].cam_methods) == ('gradcampp', 'gradcam')


def test_full_frame_boxes_are_counted_on_the_boxes_of_per_image_csv():
  """metrics.json counted full-frame boxes on the model's S×S grid, per_image.csv and predict
  box the map in each image's aspect: 232 of 300 against the CSV's 228 (box_threshold 0.01)."""
  import types  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.evaluation.evaluators import boxes
  test = types.SimpleNamespace(maps={
      'empty_aesthetic': np.array([False, False, True]),
      'box_aesthetic': np.array([[0, 0, 32, 32], [0, 0, 32, 32], [0, 0, 0, 0]])})
  image_boxes = [((40, 60), {'aesthetic': (0, 0, 40, 60)}),
                 ((40, 60), {'aesthetic': (0, 3, 40, 60)}), ((40, 60), {})]
  m = boxes.run(test, image_boxes)
  assert (m['full_frame_boxes'], m['full_frame_box_share'], m['empty_maps']) == (1, 0.5, 1)
