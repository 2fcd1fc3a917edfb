"""What a run was computed on: parsing, the one-line summary, what differs, the workdir record
and its use by training (a resume on another machine warns) and evaluation (the report)."""
import json

import pytest

from aesthetics_jax import environment
from aesthetics_jax.evaluation import run as eval_run
from aesthetics_jax.train import trainer

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
stepping\t: 1
cpu MHz\t\t: 2600.000
cache size\t: 1024 KB
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
processor\t: 1
cpu MHz\t\t: n/a
"""


def test_cpuinfo_and_vector_isa():
  info = environment.cpuinfo(ZEN4)
  assert info['cpu_model'] == 'AMD EPYC 9B14' and info['cpu_microarchitecture'] == 'Zen 4 (Genoa)'
  assert info['cpu_mhz'] == 2600.0  # an unparsable clock line is skipped, not a ValueError
  assert info['cpu_features']['avx512_bf16'] and not info['cpu_features']['amx_tile']
  flags = info['cpu_flags']
  assert environment.vector_isa(flags, '') == 'AVX512'
  # XLA_FLAGS narrows what XLA generates; it cannot widen it, and junk values are ignored.
  assert environment.vector_isa(flags, '--foo=1 --xla_cpu_max_isa=avx2') == 'AVX2'
  assert environment.vector_isa(['sse4_2', 'avx'], '--xla_cpu_max_isa=AVX512') == 'AVX'
  assert environment.vector_isa(flags, '--xla_cpu_max_isa=PENTIUM') == 'AVX512'
  assert environment.vector_isa(['neon'], '') is None and environment.vector_isa(None, '') is None
  assert environment.cpuinfo('') == {}


def _rec(**kw):
  rec = {'backend': 'cpu', 'device_kind': 'cpu', 'num_devices': 1, 'num_processes': 1,
         'cpu_model': 'AMD EPYC 9B14', 'cpu_microarchitecture': 'Zen 4 (Genoa)',
         'vector_isa': 'AVX512', 'versions': {'jax': '0.10.2', 'jaxlib': '0.10.2'}}
  rec.update(kw)
  return rec


def test_summary_and_differences():
  line = environment.summary(_rec())
  assert line == ('cpu (1 device): AMD EPYC 9B14, Zen 4 (Genoa), AVX512 vector code; '
                  'jax 0.10.2, jaxlib 0.10.2')
  gpu = environment.summary(_rec(backend='gpu', device_kind='NVIDIA H200', num_devices=8))
  assert gpu.startswith('gpu (8 devices): NVIDIA H200, AMD EPYC') and 'vector' not in gpu
  assert environment.differences(_rec(), _rec()) == []
  changed = environment.differences(
      _rec(), _rec(vector_isa='AVX2', versions={'jax': '0.10.2', 'jaxlib': '0.10.3'}))
  assert changed == ['vector_isa AVX512 -> AVX2', 'jaxlib 0.10.2 -> 0.10.3']


def test_record_run_appends_and_survives_a_damaged_file(tmp_path, monkeypatch):
  rec = environment.describe()
  assert rec['backend'] and rec['versions']['jax'] and rec['num_devices'] >= 1
  json.dumps(rec)  # JSON-ready
  _, changed = environment.record_run(tmp_path, 0, 'train')
  assert changed == []
  monkeypatch.setattr(environment, 'describe', lambda: {**rec, 'vector_isa': 'SSE4_2'})
  _, changed = environment.record_run(tmp_path, 5, 'train')
  assert changed == [f'vector_isa {rec["vector_isa"]} -> SSE4_2']
  runs = environment.read_runs(tmp_path)
  assert [(r['command'], r['step']) for r in runs] == [('train', 0), ('train', 5)]
  (tmp_path / environment.FILE_NAME).write_text('{"runs": [1, {"step"')  # cut off mid-write
  assert environment.read_runs(tmp_path) == []
  environment.record_run(tmp_path, 7, 'train')
  assert [r['step'] for r in environment.read_runs(tmp_path)] == [7]


def test_training_records_its_machine_and_a_resume_elsewhere_warns(tmp_path, monkeypatch, capsys):
  from tiny_ava import prepare_tiny  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.configs import demo  # pylint: disable=import-outside-toplevel
  data = prepare_tiny(tmp_path / 'tiny')
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(data)
  c.update_from_flattened_dict({'num_train_steps': 2, 'checkpoint_every_steps': 1,
                                'log_cam_images': 0})
  work = tmp_path / 'w'
  trainer.train_and_evaluate(c, work)
  runs = environment.read_runs(work)
  assert len(runs) == 1 and runs[0]['command'] == 'train' and runs[0]['step'] == 0
  assert runs[0]['versions']['jaxlib']
  # The same workdir resumed on a machine limited to AVX2: training goes on and says so.
  real = environment.describe
  monkeypatch.setattr(environment, 'describe', lambda: {**real(), 'vector_isa': 'AVX2'})
  c.num_train_steps = 3
  capsys.readouterr()
  assert trainer.train_and_evaluate(c, work)['step'] == 3
  out = capsys.readouterr().err
  assert 'resumed at step 2 on other hardware or libraries' in out
  assert f'vector_isa {runs[0]["vector_isa"]} -> AVX2' in out
  envs = eval_run._training_environments(work)  # pylint: disable=protected-access
  assert [e['from_step'] for e in envs] == [0, 2]
  note = eval_run.environment_note({'environment': real(), 'training_environments': envs})
  assert 'then from step 2 on' in note and 'AVX2 vector code' in note
  assert 'different vector instruction sets' in note


def test_environment_note_without_records():
  assert eval_run.environment_note({}) is None
  note = eval_run.environment_note({'environment': _rec()})
  assert note.startswith('Trained on: not recorded') and 'Evaluated on cpu (1 device)' in note
  same = eval_run.environment_note({'environment': _rec(), 'training_environments': [
      {'summary': environment.summary(_rec()), 'from_step': 0, 'backend': 'cpu',
       'vector_isa': 'AVX512'}]})
  assert 'Evaluated on the same.' in same and 'different vector' not in same
  assert 'compare figures from machines with the same instruction set' in same


@pytest.mark.parametrize('text', ['{', '[]', '{"runs": 3}', '{"runs": ["x"]}'])
def test_read_runs_of_odd_files(tmp_path, text):
  (tmp_path / environment.FILE_NAME).write_text(text)
  assert environment.read_runs(tmp_path) == []


def test_a_resume_on_another_training_device_count_warns(tmp_path, capsys):
  # The commands add one CPU device per core and train on one of them: environment.json said
  # jax.device_count() (2), so a run started with XLA_FLAGS=...device_count=2 (trained on 2)
  # and resumed without it (trained on 1) recorded 2 both times and never warned.
  from aesthetics_jax.train import resume_checks  # pylint: disable=import-outside-toplevel
  resume_checks.record_environment(tmp_path, 0, num_devices=2)
  capsys.readouterr()
  resume_checks.record_environment(tmp_path, 2, num_devices=1)
  out = capsys.readouterr().err
  assert 'resumed at step 2 on other hardware' in out and 'num_devices 2 -> 1' in out
  assert [r['num_devices'] for r in environment.read_runs(tmp_path)] == [2, 1]


def test_a_resume_of_a_record_of_jax_devices_does_not_warn_of_the_count(tmp_path, capsys):
  # Records written before the training mesh's count was hold JAX's (one CPU device per
  # core): compared with the mesh's 1, the first resume of every such workdir warned
  # 'num_devices 2 -> 1' though nothing had changed.
  from aesthetics_jax.train import resume_checks  # pylint: disable=import-outside-toplevel
  old = {'command': 'train', 'step': 0, **environment.describe(), 'num_devices': 2}
  (tmp_path / environment.FILE_NAME).write_text(json.dumps({'runs': [old]}))
  resume_checks.record_environment(tmp_path, 2, num_devices=1)
  assert 'num_devices' not in capsys.readouterr().err
  # Two records of the run's own count are compared (the test above).
  resume_checks.record_environment(tmp_path, 4, num_devices=2)
  assert 'num_devices 1 -> 2' in capsys.readouterr().err
