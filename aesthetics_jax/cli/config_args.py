"""`--config=...` and `--config.KEY=VALUE` for the commands: checked before absl parses them.

absl/ml_collections report a missing config file, a bad config argument or a misspelled key
with a 30-line traceback; here each is one line (exit 2) naming what is valid. Config files
are also addressable by name: `--config=demo:vgg16` and `--config=configs/demo.py:vgg16`
(from any directory) resolve to the file installed in `aesthetics_jax/configs/`.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from aesthetics_jax import configs
from aesthetics_jax.cli import common
from aesthetics_jax.configs import default

_PREFIX = '--config.'


def _keys(config, prefix: str = '') -> list[str]:
  out = []
  for k, v in config.items():
    if hasattr(v, 'items'):
      out += _keys(v, f'{prefix}{k}.')
    else:
      out.append(prefix + k)
  return out


def _value(config, key: str):
  for part in key.split('.'):
    config = config[part]
  return config


def _is_literal(text: str) -> bool:
  try:
    ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return False
  return True


def check(argv: Sequence[str], script: str, allowed: Sequence[str] | None = None,
          config_is: str | None = None) -> None:
  """Exits 2 with one line if a `--config.KEY` in argv is unknown or not allowed here.

  allowed: key prefixes this script accepts (e.g. ('eval.', 'data.')); None = all keys.
  config_is: for a command whose config is fixed (a workdir's, the control's), what it is:
    a `--config=X` there is one line saying so (ml_collections said only 'Overriding config
    is not allowed').
  """
  config = default.get_config()
  keys = _keys(config)
  tuple_keys = {k for k in keys if isinstance(_value(config, k), tuple)}
  takes = (' and '.join(f'{_PREFIX}{a}KEY=VALUE' for a in allowed) if allowed is not None
           else f'{_PREFIX}KEY=VALUE')
  for arg in argv[1:]:
    if arg == '--':
      break
    if config_is and (arg == '--config' or arg.startswith('--config=')):
      common.usage_error(script, f'{arg}: this command takes no config file (its config is '
                         f'{config_is}); change its keys with {takes}')
    if not arg.startswith(_PREFIX):
      continue
    key = arg[len(_PREFIX):].split('=', 1)[0]
    if key not in keys:
      near = near_keys(key, keys)
      hint = f'; did you mean {", ".join("--config." + k for k in near)}?' if near else (
          '; see aesthetics_jax/configs/default.py for the keys')
      common.usage_error(script, f'unknown config key --config.{key}{hint}')
    if allowed is not None and not key.startswith(tuple(allowed)):
      common.usage_error(
          script, f'--config.{key} cannot change here (the checkpoint fixes it); this command '
          f'takes {takes}')
    name, eq, value = arg.partition('=')
    if eq and key in tuple_keys and ',' in value and not _is_literal(value):
      # ml_collections' own line suggested "'features.13,features.14'", one name it refuses.
      items = ', '.join(repr(v.strip()) for v in value.split(',') if v.strip())
      common.usage_error(script, f'{arg}: a list of names is a Python tuple here: '
                         f'{name}="({items},)"')


def _comma_hint(path: str, arg: str) -> str | None:
  """The hint for `configs/X.py,smoke` / `X,smoke` (arguments after ',' instead of ':'), when
  the part before the first ',' is a config; None otherwise."""
  head, sep, words = path.partition(',')
  if not sep or not head:
    return None
  try:
    resolve_path(head)
  except ValueError:
    return None
  fixed = f'{head}:{",".join(w for w in (words, arg) if w)}'
  return (f"{path}{':' + arg if arg else ''}: no such config file; config arguments follow "
          f"':', not ',': use --config={fixed}")


def resolve_path(spec: str) -> str:
  """`NAME`, `NAME.py`, `configs/NAME.py` or a file path, each with an optional `:arg` →
  `<existing file>[:arg]`. ValueError (one line) if no such file or packaged config."""
  path, sep, arg = spec.partition(':')
  if path.startswith('~'):  # --config=~/mine.py: the shell expands '~' only at a word's start
    path = os.path.expanduser(path)
    spec = path + sep + arg
  packaged = configs.packaged()
  if path and Path(path).is_file():
    return spec
  p = Path(path)
  # A bare name, or the checkout's `configs/NAME.py` used from another directory.
  if p.stem in packaged and (len(p.parts) == 1 or p.parts == ('configs', p.name)) and (
      p.suffix in ('', '.py')):
    return packaged[p.stem] + sep + arg
  comma = _comma_hint(path, arg)
  if comma:
    raise ValueError(comma)
  near = difflib.get_close_matches(p.stem, list(packaged), n=1)
  hint = f' (did you mean {near[0]}?)' if near else ''
  raise ValueError(f'config file {path!r} not found{hint}; pass a packaged config name '
                   f'({", ".join(packaged)}), e.g. --config=demo:vgg16, or a path to a .py '
                   'file with get_config()')


def load(spec: str):
  """The config `spec` (`<file>[:arg]`) stands for; ValueError (one line) if it fails to load."""
  path, sep, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_aesthetics_config_check', path)
  if module_spec is None or module_spec.loader is None:
    raise ValueError(f'config file {path!r} is not a Python file; pass a .py file')
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # the user's file: any error is theirs to fix, in one line
    raise ValueError(f'config file {path!r} failed to load ({type(e).__name__}: '
                     f'{common.first_line(e)})') from None
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(f'config file {path!r} has no get_config() function')
  try:
    config = module.get_config(arg) if sep else module.get_config()
  except ValueError as e:   # the configs' own argument errors are one line already
    # ... and name their file; another's error is given the file ('boom' named nothing).
    msg = common.first_line(e)
    raise ValueError(msg if Path(path).name in msg else
                     f'config file {path!r}: get_config failed ({msg})') from None
  except Exception as e:
    raise ValueError(f'config {spec!r}: get_config failed ({type(e).__name__}: '
                     f'{common.first_line(e)})') from None
  _check_complete(path, config)
  return config


_START_FROM = ('start from aesthetics_jax.configs.default.get_config() (or a packaged config) '
               'and change what you need')


def _check_complete(path: str, config) -> None:
  """A user's config must be a ConfigDict with every key of the default: a dict or a
  partial ConfigDict used to end in an AttributeError traceback once training read a key."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f'config file {path!r}: get_config() returned a {type(config).__name__}, '
                     f'not an ml_collections.ConfigDict; {_START_FROM}')
  known = set(_keys(default.get_config()))
  missing = sorted(known - set(_keys(config)))
  if missing:
    raise ValueError(f'config file {path!r} lacks {len(missing)} key(s) of the default '
                     f'config (e.g. {missing[0]}); {_START_FROM}')
  # A misspelt key (c.optim.learning_rate = 0.01 for optim.lr) was read by nothing: the run
  # trained with the default, silently. --config.KEY overrides are checked by `check`.
  extra = sorted(set(_keys(config)) - known)
  if extra:
    raise ValueError(f'config file {path!r} sets {len(extra)} key(s) that nothing reads '
                     f'({", ".join(extra[:3])}{", ..." if len(extra) > 3 else ""}); '
                     f'{_near_key(extra[0], known)}; fix or remove them')


# Other libraries' names for our keys, too far apart for difflib ('learning_rate' and 'lr'
# share 2 letters of 15: the README's own example named the whole group, not the key).
_ALIASES = {'learning_rate': 'lr', 'epochs': 'num_epochs', 'num_steps': 'num_train_steps',
            'train_steps': 'num_train_steps', 'max_steps': 'num_train_steps',
            'wd': 'weight_decay', 'bs': 'batch_size'}


def _alias(key: str, keys) -> list[str]:
  """[our key for `key`'s name in other libraries (`_ALIASES`)], if `keys` has it; else []."""
  parent, _, leaf = key.rpartition('.')
  alias = f'{parent}.{_ALIASES[leaf]}' if parent and leaf in _ALIASES else _ALIASES.get(leaf)
  return [alias] if alias in keys else []


def near_keys(key: str, keys, n: int = 3) -> list[str]:
  """The dotted keys of `keys` nearest to `key`: its alias first, then difflib's."""
  found = _alias(key, keys)
  return (found + [k for k in difflib.get_close_matches(key, keys, n=n) if k not in found])[:n]


def _near_key(key: str, known: set[str]) -> str:
  """'did you mean optim.lr?' from the keys beside `key`, else the keys there are."""
  parent, _, leaf = key.rpartition('.')
  siblings = sorted(k.rpartition('.')[2] for k in known if k.rpartition('.')[0] == parent)
  near = ([k.rpartition('.')[2] for k in _alias(key, known)]
          or difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6))
  where = f'{parent}.' if parent else ''
  if near:
    return f'did you mean {where}{near[0]}?'
  if siblings:
    shown = ', '.join(siblings[:12]) + (', ...' if len(siblings) > 12 else '')
    return f'the keys of {parent} are: {shown}' if parent else f'top-level keys: {shown}'
  sections = sorted({k.rpartition('.')[0] for k in known} - {''})
  near = difflib.get_close_matches(parent, sections, n=1, cutoff=0.6)
  return (f'there is no section {parent}' + (f'; did you mean {near[0]}?' if near else
                                             f' (sections: {", ".join(sections)})'))


def resolve_config_flag(argv: Sequence[str], script: str, flag: str = 'config') -> list[str]:
  """argv with `--config=SPEC` (or `--config SPEC`) resolved to a file and checked to load,
  and moved before the `--config.KEY=VALUE` overrides.

  Exits 2 with one line if the file is missing, fails to load or rejects its argument.
  """
  out = list(argv)
  moved: list[str] = []  # the --config arguments, in order
  first_key = None       # where the first --config.KEY override is
  given = False          # a --config argument, with or without its value
  i = 1
  while i < len(out) and out[i] != '--':
    arg = out[i]
    if first_key is None and arg.startswith(f'--{flag}.'):
      first_key = i
    given = given or arg == f'--{flag}' or arg.startswith(f'--{flag}=')
    if arg.startswith(f'--{flag}='):
      value, n = arg.split('=', 1)[1], 1
    elif arg == f'--{flag}' and i + 1 < len(out):
      value, n = out[i + 1], 2
    else:
      i += 1
      continue
    try:
      resolved = resolve_path(value)
      load(resolved)
    except ValueError as e:
      common.usage_error(script, str(e))
    if first_key is None:
      out[i:i + n] = [f'--{flag}={resolved}']
      i += 1
    else:
      # ml_collections refuses an override given before the file ('Found --config.KEY in argv
      # before a value for --config was specified', exit 2); the order means nothing to us.
      moved.append(f'--{flag}={resolved}')
      del out[i:i + n]
  if first_key is not None and not given:
    # absl said "Unknown command line flag 'config.seed'. Did you mean: config ?"
    common.usage_error(script, f'{out[first_key]}: no --{flag} to apply it to; pass one, '
                       f'e.g. --{flag}=mobilenet_v2_emd (packaged: '
                       f'{", ".join(configs.packaged())})')
  if moved:
    out[first_key:first_key] = moved
  return out
