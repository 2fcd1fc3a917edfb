"""`--config.KEY=VALUE` for the launch scripts: keys checked before absl parses them.

ml_collections raises a 30-line traceback for a misspelled key (`--config.data.datadir`);
here the user gets one line naming the key and the nearest valid ones.
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

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


def check(argv: Sequence[str], script: str, allowed: Sequence[str] | None = None) -> None:
  """Exits 2 with one line if a `--config.KEY` in argv is unknown or not allowed here.

  allowed: key prefixes this script accepts (e.g. ('eval.', 'data.')); None = all keys.
  """
  keys = _keys(default.get_config())
  for arg in argv[1:]:
    if not arg.startswith(_PREFIX):
      continue
    key = arg[len(_PREFIX):].split('=', 1)[0]
    if key not in keys:
      near = difflib.get_close_matches(key, keys, n=3)
      hint = f'; did you mean {", ".join("--config." + k for k in near)}?' if near else (
          '; see aesthetics_jax/configs/default.py for the keys')
      print(f'{script}: unknown config key --config.{key}{hint}', file=sys.stderr)
      sys.exit(2)
    if allowed is not None and not key.startswith(tuple(allowed)):
      print(f'{script}: --config.{key} cannot change here (the checkpoint fixes it); '
            f'this command takes --config.{{{",".join(a.rstrip(".") for a in allowed)}}}.*',
            file=sys.stderr)
      sys.exit(2)
