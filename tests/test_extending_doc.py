"""docs/extending.md: its Python and YAML blocks run, so the examples cannot rot.

Each Python block starts with ``# file: PATH`` (a new module, loaded under its dotted name) or
``# add to: PATH`` (lines run in the namespace of that existing module). They run in document
order, with every registry copied first and restored afterwards, so nothing leaks into other
tests.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cpc.registries import CRITERIA
from cpc.criterion.base import CriterionOutput
from cpc.criterion.registry import build_criterion
from cpc.criterion.cpc import HEADS
from cpc.criterion.workers import WorkerOutput, build_workers, total_worker_loss
from cpc.criterion.workers.labellers import LABELLERS
from cpc.criterion.workers.registry import WORKERS
from cpc.model import ARS, ENCODERS, NORM_LAYERS, build_model
from cpc.options import build_parser, complete_with_defaults
from cpc.stats import STATS, StatError, StatsCollector, parse_stats_spec
from cpc.config_file import load_config
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import ConfigError
from tests.test_train import SMALL, corpus_args, run

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
REGISTRIES = (ENCODERS, ARS, NORM_LAYERS, HEADS, CRITERIA, WORKERS, LABELLERS, STATS)
HEADER = re.compile(r"# (file|add to): (\S+)\n")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def load_new_module(path: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = module_name(path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = name.rpartition(".")[0]
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(source, f"docs/extending.md ({path})", "exec"), module.__dict__)


@pytest.fixture
def examples(monkeypatch):
    """Run every Python block of the page on copies of the registries."""
    for registry in REGISTRIES:
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    for block in code_blocks("python"):
        kind, path = HEADER.match(block).groups()
        if kind == "file":
            assert not (ROOT / path).exists(), f"{path} exists: the example would shadow it"
            load_new_module(path, block, monkeypatch)
        else:
            namespace = dict(vars(importlib.import_module(module_name(path))))
            exec(compile(block, f"docs/extending.md (added to {path})", "exec"), namespace)


def test_every_python_block_says_where_it_goes():
    blocks = code_blocks("python")
    assert blocks and all(HEADER.match(block) for block in blocks)


def test_examples_register_their_names(examples):
    assert {"log_energy", "apc", "frameNorm", "logmel"} <= (set(WORKERS) | set(CRITERIA) | set(STATS)
                                                             | set(ENCODERS))


@pytest.mark.parametrize("name,registry", [("log_energy", WORKERS), ("apc", CRITERIA),
                                           ("frameNorm", STATS), ("logmel", ENCODERS)])
def test_names_of_the_examples_are_not_registered_outside_them(name, registry):
    assert name not in registry


def test_worker_example_builds_from_the_yaml_and_gives_a_finite_loss(examples, tmp_path):
    (config,) = code_blocks("yaml")
    path = tmp_path / "recipe.yaml"
    path.write_text(config)
    _, pase = load_config(path, build_parser())
    assert pase["workers_config"]["regressor"]["log_energy"] == {"win_length": 400, "hidden_size": 128,
                                                                "weight": 0.5}
    workers = build_workers(pase["workers_config"], dim_encoded=16)
    worker = workers["log_energy"]
    assert worker.weight == 0.5 and worker.labeller.dim == 1 and worker.normalize
    torch.manual_seed(0)
    audio = torch.randn(2, 1, 3200)
    assert worker.labeller(audio).shape == (2, 1, 20)
    outputs = [w(torch.randn(2, 20, 16), audio, torch.tensor([0, 1])) for w in workers.values()]
    assert all(isinstance(out, WorkerOutput) for out in outputs)
    loss = total_worker_loss(outputs, workers)
    assert torch.isfinite(loss)
    loss.backward()
    assert "log_energy" in LABELLERS
    bad = yaml.safe_load(config)
    bad["workers_config"]["regressor"]["log_energy"]["win_length"] = 100
    with pytest.raises(ConfigError, match="workers_config.regressor.log_energy: win_length"):
        build_workers(bad["workers_config"], dim_encoded=16)


def test_criterion_example_gives_a_criterion_output(examples):
    args = complete_with_defaults({"apc_steps": 3})
    criterion = build_criterion("apc", args, dim_context=12, dim_encoded=8)
    c, z = torch.randn(2, 10, 12, requires_grad=True), torch.randn(2, 10, 8)
    out = criterion(c, z, None, capture=True)
    assert isinstance(out, CriterionOutput) and out.step_losses.shape == (3,)
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, out.step_losses.sum())
    assert out.captures["pred"].shape == (2, 7, 3, 8)
    out.loss.backward()
    assert c.grad is not None
    with torch.no_grad():  # a perfect step-1 head zeroes the step-1 loss
        criterion.heads[0].weight.zero_()
        criterion.heads[0].weight[:, :8] = torch.eye(8)
        criterion.heads[0].bias.zero_()
    contexts = torch.nn.functional.pad(z[:, 1:], (0, 4))  # c_t holds z_{t+1}
    assert criterion(contexts, z[:, :9]).step_losses[0].item() == pytest.approx(0.0, abs=1e-6)
    assert "apc" in CRITERIA.names()


def test_criterion_example_declares_its_option_in_its_group(examples):
    parser = build_parser()
    assert parser.parse_args(["--criterion", "apc", "--apc_steps", "5"]).apc_steps == 5
    assert "APC criterion:\n  --apc_steps APC_STEPS" in parser.format_help()


def test_criterion_example_trains_resumes_with_its_option_and_is_probed(examples, tiny_corpus,
                                                                      tmp_path, capsys):
    out = tmp_path / "apc"
    base = corpus_args(tiny_corpus) + SMALL + ["--criterion", "apc", "--encoder_type", "mfcc",
                                               "--pathCheckpoint", out, "--save_step", "1"]
    assert run(base + ["--apc_steps", "2", "--nEpoch", "2"]) == 0
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1] and all(len(losses) == 2 for losses in logs["locLoss_train"])
    assert json.loads((out / "checkpoint_args.json").read_text())["apc_steps"] == 2
    state = ckpt.load_checkpoint(out / "checkpoint_1.pt")
    assert state["model_args"]["apc_steps"] == 2 and state["model_args"]["criterion"] == "apc"
    assert {key.split(".")[1] for key in state["cpcCriterion"]} == {"0", "1"}  # two heads

    capsys.readouterr()
    assert run(base + ["--nEpoch", "3"]) == 0  # --apc_steps omitted: the saved 2 is restored
    assert "resuming" in capsys.readouterr().out
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1, 2] and len(logs["locLoss_train"][2]) == 2
    assert ckpt.load_checkpoint(out / "checkpoint_2.pt")["model_args"]["apc_steps"] == 2

    assert run(base + ["--apc_steps", "4", "--nEpoch", "4"]) == 2
    err = capsys.readouterr().err
    assert f"--apc_steps 4 contradicts the run in {out}, trained with --apc_steps 2" in err
    assert [epoch for epoch, _ in ckpt.list_checkpoints(out)] == [0, 1, 2]

    probe = corpus_args(tiny_corpus) + ["--pathCheckpoint", out, "--only_classif_metric",
                                        "--speaker_sep", "--linsep_n_epoch", "1",
                                        "--linsep_logs_dir", tmp_path / "logs", "--device", "cpu"]
    assert run(probe) == 0
    assert "speaker (last frame)" in capsys.readouterr().out
    assert (tmp_path / "logs" / "2" / "speaker" / "best.json").is_file()


def test_stat_example_parses_and_computes(examples, tmp_path):
    stats = parse_stats_spec(f"frameNorm:ctx_repr_reprDiff:cosine,ctx_repr,0.05,{tmp_path}")
    assert stats[0].name == "frameNorm_ctx_repr"
    collector = StatsCollector(stats)
    torch.manual_seed(0)
    batches = [torch.randn(3, 7, 5), torch.randn(2, 4, 5)]
    for frames in batches:
        collector.update({"ctx_repr": frames})
    results = collector.finalize(epoch=1)
    norms = torch.cat([frames.double().norm(dim=-1).flatten() for frames in batches])
    assert results["frameNorm_ctx_repr_count"] == 29
    assert results["frameNorm_ctx_repr_mean"] == pytest.approx(norms.mean().item())
    assert results["frameNorm_ctx_repr_std"] == pytest.approx(norms.std(unbiased=False).item())
    assert math.isfinite(results["reprDiff_ctx_repr_cosine_by0.05_mean"])
    with pytest.raises(StatError, match="frameNorm takes one argument"):
        parse_stats_spec("frameNorm:pred")


def test_encoder_example_builds_with_its_flag(examples):
    args = build_parser().parse_args(["--encoder_type", "logmel", "--hiddenEncoder", "32",
                                      "--hiddenGar", "24"])
    model = build_model(args)
    assert model.downsampling == 160 and model.dim_encoded == 32 and model.dim_context == 24
    c, z, _ = model(torch.randn(2, 1, 3200 + 100), None)
    assert z.shape == (2, 20, 32) and c.shape == (2, 20, 24)
    assert build_model(complete_with_defaults({"encoder_type": "logmel"})).dim_encoded == 256


def test_hook_example_traces_the_rate_and_keeps_its_count_across_a_resume(examples):
    from tests.test_trainer_unit import N_BATCHES, make_trainer

    from cpc.trainer import Resumption
    hook = sys.modules["cpc.lr_trace_hook"].LearningRateTrace()
    trainer = make_trainer([hook], logging_step=2)
    logs = trainer.fit(1, Resumption())
    assert [entry["step"] for entry in logs["lr_trace"]] == [2, 4, 4]  # the epoch end syncs too
    assert all(entry["lr"] == pytest.approx(0.1) for entry in logs["lr_trace"])
    saved = trainer.run.state(0)["hooks"]
    assert saved == {"lr_trace": {"seen": 3}}
    resumed = sys.modules["cpc.lr_trace_hook"].LearningRateTrace()
    logs = make_trainer([resumed], logging_step=2).fit(2, Resumption(1, None, N_BATCHES, saved))
    assert resumed.seen == 6 and logs["lr_trace"][-1]["lr"] == pytest.approx(0.05)
