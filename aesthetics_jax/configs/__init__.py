"""Configs: `default.get_config()` holds every key the library reads, with its default;
variants (`demo`, `mobilenet_v2_emd`, `vgg16_binary`) override it. The library reads keys
without fallback defaults (`tests/test_config.py` checks), so a default lives in one place.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path


def parse_arg(arg: str | None, name: str, allowed: Collection[str],
              one_of: Sequence[Collection[str]] = ()) -> set[str]:
  """The comma-separated config argument (`--config=configs/X.py:a,b`) as a set of words.

  allowed: every word the config takes; one_of: groups of which at most one word may appear.
  Raises ValueError (one line, naming the config and the allowed words) otherwise.
  """
  words = [a.strip() for a in (arg or '').split(',') if a.strip()]
  bad = sorted(set(words) - set(allowed))
  clash = [sorted(set(words) & set(g)) for g in one_of if len(set(words) & set(g)) > 1]
  if bad or clash:
    what = f'unknown {bad}' if bad else f'only one of {clash[0]}'
    forms = ' | '.join(sorted(allowed))
    raise ValueError(f'configs/{name}.py: bad config argument {arg!r} ({what}); '
                     f'allowed, comma-separated: {forms}')
  return set(words)


def packaged() -> dict[str, str]:
  """Config name → path of its file in the installed package (`demo` → .../configs/demo.py).

  What `--config=NAME[:arg]` resolves to, so installed commands find the configs from any
  directory; the package is installed as plain files (not zipped), so the paths exist.
  """
  folder = Path(__file__).resolve().parent
  return {p.stem: str(p) for p in sorted(folder.glob('*.py')) if p.stem != '__init__'}
