"""Changes to a restored checkpoint's config for one evaluation or predictor, checked first.

`ConfigDict.update_from_flattened_dict` adds a misspelled key silently (`eval.box_treshold`
changed nothing) and names a wrong type in a paragraph; a key outside the evaluation's keys
(`model.arch`) would rebuild another model around the restored weights, and another
`data.subset` puts the model's training images in its test split. Each is one line here.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any


class OverrideError(ValueError):
  """One-line problem with an override (unknown key, a key the checkpoint fixes, wrong type)."""


def flat_keys(config, prefix: str = '') -> dict[str, Any]:
  """{'a.b.c': value} of a nested config."""
  out = {}
  for k, v in config.items():
    if hasattr(v, 'items'):
      out.update(flat_keys(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def apply(config, overrides: Mapping[str, Any] | None, *,
          allowed: Sequence[str] = ('eval.',), what: str = 'overrides') -> None:
  """Updates `config` in place with dotted `overrides` ({'eval.box_threshold': 0.4}).

  allowed: key prefixes that may change (the rest are fixed by the checkpoint). `data.subset`
  may only repeat the checkpoint's own subset. Raises OverrideError (one line, naming the key
  and what is valid) before changing anything.
  """
  if overrides is None:
    return
  if not isinstance(overrides, Mapping):
    raise OverrideError(f'{what} must be a dict of dotted config keys, e.g. '
                        f"{{'eval.box_threshold': 0.4}}; got {type(overrides).__name__}")
  keys = flat_keys(config)
  scope = ', '.join(f'{a}*' for a in allowed)
  for key, value in overrides.items():
    if not isinstance(key, str) or key not in keys:
      near = difflib.get_close_matches(str(key), [k for k in keys if k.startswith(
          tuple(allowed))], n=3)
      hint = f'; did you mean {", ".join(near)}?' if near else f'; only {scope} keys can be set'
      raise OverrideError(f'{what}: unknown config key {key!r}{hint}')
    if not key.startswith(tuple(allowed)):
      raise OverrideError(f'{what}: {key} cannot change here (the checkpoint fixes it); '
                          f'only {scope} keys can be set')
    if key == 'data.subset' and value != keys[key]:
      raise OverrideError(
          f'{what}: data.subset={value!r}, but the model was trained on {keys[key]!r}: the '
          f"{value!r} test split holds {keys[key]!r} training images; evaluate on "
          f"{keys[key]!r}, or train on {value!r}")
  trial = config.copy_and_resolve_references()
  for key, value in overrides.items():  # one at a time: an error names its key
    try:
      trial.update_from_flattened_dict({key: value})
    except (TypeError, ValueError) as e:
      raise OverrideError(f'{what}: {key}={value!r} is a {type(value).__name__}; this key takes '
                          f'a {type(keys[key]).__name__} (e.g. {keys[key]!r})') from e
  config.update_from_flattened_dict(dict(overrides))


def record(overrides: Mapping[str, Any] | None) -> dict:
  """`overrides` as metrics.json records them (sorted, through JSON: tuples become lists), so
  a job can tell whether an evaluation on disk ran with the overrides it would pass now."""
  return json.loads(json.dumps(dict(sorted((overrides or {}).items())), default=str))
