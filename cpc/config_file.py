"""``--config FILE.yaml``: defaults for any train.py flag, plus the PASE recipe's settings.

Keys are argparse destinations (``nEpoch``, ``encoder_type``...) or PASE keys::

    ckpt_save_interval   epochs between checkpoints: PASE's name of save_step (int >= 1)
    num_ckpts_keep       checkpoints kept, older ones deleted: PASE's name of keep_checkpoints
    chunk_size           samples per window: becomes the default of --sizeWindow (multiple of 160)
    encoder_lr_start     initial learning rate of the encoder (float > 0; default 5e-4, PASE's);
                         this and the next three keys need workers_config
    worker_lr_start      initial learning rate of each worker (float > 0; default 5e-4)
    lr_update_interval   epochs between learning-rate decays (int >= 1; default 30)
    decay_factor         factor applied at each decay (0 < f <= 1; default 0.5):
                         lr(epoch) = lr_start * cpc.utils.optim.pase_lr_factor(epoch, lr_update_interval, decay_factor)
    workers_config       {regressor: {...}, classifier: {...}}, see cpc.criterion.workers.registry

train.py applies a file in three lines; the command line wins over the file, which wins over
the parser's defaults::

    defaults, pase_settings = load_config(path, parser)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)

The file is read with ``yaml.safe_load`` (no ``!!python`` tags); unknown keys and values of the
wrong type are :class:`~cpc.utils.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

import yaml

from cpc.criterion.recipe import recipe_settings
from cpc.criterion.workers import check_workers_config
from cpc.utils.constants import window_size_problem
from cpc.utils.errors import ConfigError

# name: (type, default, minimum, maximum), as the recipe declares them
PASE_SETTINGS: dict[str, tuple[type, Any, float, float | None]] = recipe_settings()
CHUNK_SIZE = "chunk_size"
WORKERS_CONFIG = "workers_config"
WORKER_SCHEDULE = ("encoder_lr_start", "worker_lr_start", "lr_update_interval", "decay_factor")
FLAG_OF_PASE_KEY = {"ckpt_save_interval": "save_step", "num_ckpts_keep": "keep_checkpoints"}


def _number(value: Any, kind: type, where: str) -> int | float:
    """``value`` as ``kind`` (int or float); numeric strings are accepted, as on the command line
    (YAML reads ``1e-4`` as a string)."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return kind(value)
    elif isinstance(value, float) and kind is float:
        return value
    raise ConfigError(f"{where} expects {'an integer' if kind is int else 'a number'}; got {value!r}")


def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
    kind = action.type or str
    if kind in (int, float):
        value = _number(value, kind, where)
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} expects a string; got {value!r} ({type(value).__name__})")
    else:
        try:
            value = kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: invalid value {value!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _flag_value(action: argparse.Action, value: Any, where: str) -> Any:
    """Check and convert a config value the way argparse would convert the flag's argument."""
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is an on/off flag: write true or false; got {value!r}")
        if isinstance(action.const, bool):  # the key holds the destination's value itself
            return value
        return action.const if value else action.default
    if value is None:
        if action.default is None or (action.choices is not None and None in action.choices):
            return None
        raise ConfigError(f"{where} cannot be empty (null)")
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        return [_scalar(action, item, where) for item in items]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where} expects a single value; got {value!r}")
    return _scalar(action, value, where)


def _pase_value(name: str, value: Any, where: str) -> int | float:
    kind, _, low, high = PASE_SETTINGS[name]
    number = _number(value, kind, where)
    too_low = number < low if kind is int else number <= low
    if too_low or (high is not None and number > high):
        bound = f">= {low}" if kind is int else f"> {low}"
        raise ConfigError(f"{where} must be {bound}{'' if high is None else f' and <= {high}'}; got {number}")
    return number


def _flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions
            if action.dest not in ("help", "config") and action.default is not argparse.SUPPRESS}


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file, read with ``yaml.safe_load`` (empty file: ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML (python tags are refused): {exc}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of settings; got {type(content).__name__}")
    return content


def load_config(path: str | Path, parser: argparse.ArgumentParser) -> tuple[dict, dict]:
    """``(defaults for parser.set_defaults, pase_settings)`` from a YAML file.

    ``pase_settings`` always holds every PASE key (defaults above where the file has none) and
    ``workers_config`` normalised to ``{"regressor": {name: settings}, "classifier": {...}}``
    (both empty without workers). ``chunk_size`` becomes ``defaults["sizeWindow"]``.
    """
    content = read_yaml(path)
    actions = _flag_actions(parser)
    special = set(PASE_SETTINGS) | {CHUNK_SIZE, WORKERS_CONFIG}
    unknown = sorted(map(str, set(content) - set(actions) - special))
    if unknown:
        valid = sorted(actions) + sorted(special)
        named = [f"{key} (did you mean {close[0]}?)" if close else key
                 for key in unknown
                 for close in [difflib.get_close_matches(key, valid, n=1, cutoff=0.6)]]
        raise ConfigError(f"{path}: unknown key(s) {', '.join(named)}; keys are train.py flag "
                          f"names (python cpc/train.py --help) and the PASE settings "
                          f"{', '.join(sorted(special))}")
    defaults = {key: _flag_value(actions[key], value, f"{path}: {key}")
                for key, value in content.items() if key in actions}
    pase = {name: spec[1] for name, spec in PASE_SETTINGS.items()}
    pase.update({key: _pase_value(key, value, f"{path}: {key}")
                 for key, value in content.items() if key in PASE_SETTINGS})
    pase[WORKERS_CONFIG] = check_workers_config(content.get(WORKERS_CONFIG))
    schedule = sorted(key for key in content if key in WORKER_SCHEDULE)
    if schedule and not any(pase[WORKERS_CONFIG].values()):
        raise ConfigError(f"{path}: {', '.join(schedule)} set(s) the learning rates of a PASE "
                          f"workers run, but the file has no workers_config: add workers, or use "
                          f"learningRate / schedulerStep for a CPC run")
    for key, flag in FLAG_OF_PASE_KEY.items():  # PASE's names of two train.py flags
        if key in content:
            if flag in defaults and defaults[flag] != pase[key]:
                raise ConfigError(f"{path}: {key} {pase[key]} contradicts {flag} "
                                  f"{defaults[flag]}; give only one")
            defaults[flag] = pase[key]
    if CHUNK_SIZE in content:
        chunk = _number(content[CHUNK_SIZE], int, f"{path}: {CHUNK_SIZE}")
        problem = window_size_problem(chunk, f"{path}: {CHUNK_SIZE}")
        if problem:
            raise ConfigError(problem)
        if "sizeWindow" in defaults and defaults["sizeWindow"] != chunk:
            raise ConfigError(f"{path}: {CHUNK_SIZE} {chunk} contradicts sizeWindow {defaults['sizeWindow']}; "
                              f"give only one")
        defaults["sizeWindow"] = chunk
    return defaults, pase
