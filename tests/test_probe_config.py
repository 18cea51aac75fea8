"""The probe settings have one source of defaults, :class:`cpc.probes.config.ProbeConfig`,
which the option modules read without importing torch."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from cpc.eval.options import linsep_parser
from cpc.options import build_parser
from cpc.probes.config import ProbeConfig

ROOT = Path(__file__).resolve().parents[1]

# ProbeConfig field -> the flag's destination, in training and in the probes' script
TRAINING_FLAGS = {"n_epochs": "linsep_n_epoch", "batch_size": "linsepBatchSizeGPU",
                  "lr": "linsep_lr", "beta1": "linsep_beta1", "beta2": "linsep_beta2",
                  "epsilon": "linsep_epsilon", "n_layers": "linsep_net_layers",
                  "logging_step": "linsep_task_logging_step",
                  "feature_budget_gb": "linsep_feature_budget_gb"}
SCRIPT_FLAGS = {"n_epochs": "nEpoch", "batch_size": "batchSizeGPU", "lr": "lr", "beta1": "beta1",
                "beta2": "beta2", "epsilon": "epsilon", "n_layers": "nLevels",
                "feature_budget_gb": "feature_budget_gb", "seed": "seed", "save_step": "save_step",
                "unfrozen": "unfrozen", "model_lr": "lr_model"}


def test_the_probe_flags_default_to_probe_config():
    defaults = ProbeConfig()
    training = build_parser().parse_args([])
    script = linsep_parser("").parse_args(["DB", "train.txt", "val.txt"])
    for field, dest in TRAINING_FLAGS.items():
        assert getattr(training, dest) == getattr(defaults, field), dest
    for field, dest in SCRIPT_FLAGS.items():
        assert getattr(script, dest) == getattr(defaults, field), dest
    # every setting has a flag, but the seed of training's probes (its --seed) and the
    # script's log step (every epoch)
    fields = {field.name for field in dataclasses.fields(ProbeConfig)}
    assert set(SCRIPT_FLAGS) | set(TRAINING_FLAGS) | {"seed"} == fields


def test_the_parsers_follow_a_changed_default(monkeypatch):
    """By construction: the flags read ProbeConfig when the parser is built."""
    changed = ProbeConfig(n_epochs=7, lr=0.5, feature_budget_gb=1.5)
    monkeypatch.setattr("cpc.options.ProbeConfig", lambda: changed)
    monkeypatch.setattr("cpc.eval.options.ProbeConfig", lambda: changed)
    training = build_parser().parse_args([])
    script = linsep_parser("").parse_args(["DB", "train.txt", "val.txt"])
    assert (training.linsep_n_epoch, training.linsep_lr, training.linsep_feature_budget_gb) == \
        (7, 0.5, 1.5)
    assert (script.nEpoch, script.lr, script.feature_budget_gb) == (7, 0.5, 1.5)


def test_probe_config_and_the_option_modules_import_no_torch():
    for module in ("cpc.probes.config", "cpc.options", "cpc.eval.options"):
        done = subprocess.run(
            [sys.executable, "-c", f"import sys, {module}; print('torch' in sys.modules)"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "False", module
