"""Run resolution on its own: a command line against a hand-made run directory (saved args and a
checkpoint file, no training), so what a resumed run takes, keeps and refuses is checked
without a corpus or a model."""
from __future__ import annotations

import pytest
import torch

from cpc.criterion.options import criterion_name
from cpc.run_config import (check_processes, output_dirs, parse_args,
                            resolve_run)
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import ConfigError


def saved_run(tmp_path, *flags: str, epoch: int = 0, state: dict | None = None) -> str:
    """A run directory as training leaves it: checkpoint_args.json of ``flags`` and one
    checkpoint (weights are not looked at here)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args, recipe = parse_args(["--pathDB", str(tmp_path), "--pathCheckpoint", str(run_dir),
                             *flags])
    ckpt.write_json(run_dir / ckpt.ARGS_FILE,
                    {**vars(args), "random_seed": 1234, "pase_settings": recipe})
    ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, epoch),
                         {ckpt.MODEL_KEY: {"w": torch.zeros(1)}, "epoch": epoch, **(state or {})})
    return str(run_dir)


def test_a_fresh_run_has_no_resume_and_draws_a_seed(tmp_path):
    config = resolve_run(["--pathDB", str(tmp_path), "--pathCheckpoint", str(tmp_path / "new"),
                          "--random_seed", "7"])
    assert config.resume is None and config.saved is None and config.seed == 7
    assert (tmp_path / "new").is_dir()  # output directories are created and proved writable
    other = resolve_run(["--pathDB", str(tmp_path), "--pathCheckpoint", str(tmp_path / "new")])
    assert isinstance(other.seed, int)


def test_a_resumed_run_takes_its_saved_options_seed_and_newest_checkpoint(tmp_path):
    run_dir = saved_run(tmp_path, "--hiddenGar", "32", "--nPredicts", "3", "--learningRate",
                        "0.01", "--samplingType", "uniform")
    config = resolve_run(["--pathCheckpoint", run_dir])  # CPC_audio's form: the run dir alone
    assert config.args.hiddenGar == 32 and config.args.nPredicts == 3
    assert config.args.learningRate == 0.01 and config.args.samplingType == "uniform"
    assert config.seed == 1234 and config.resume["epoch"] == 0
    assert config.args.pathDB == str(tmp_path)


def test_a_resume_applies_given_training_flags_and_refuses_a_changed_architecture(tmp_path):
    run_dir = saved_run(tmp_path, "--hiddenGar", "32", "--learningRate", "0.01")
    config = resolve_run(["--pathCheckpoint", run_dir, "--learningRate", "0.02"])
    assert config.args.learningRate == 0.02 and config.saved["learningRate"] == 0.01
    with pytest.raises(ConfigError, match="--hiddenGar 64 contradicts the run in"):
        resolve_run(["--pathCheckpoint", run_dir, "--hiddenGar", "64"])
    with pytest.raises(ConfigError, match="--CPCCTC True contradicts the run in .* trained "
                                          "with --CPCCTC False"):
        resolve_run(["--pathCheckpoint", run_dir, "--CPCCTC"])


def test_invocation_options_are_never_taken_from_the_saved_run(tmp_path):
    run_dir = saved_run(tmp_path, "--device", "cpu", "--ignore_cache")
    config = resolve_run(["--pathCheckpoint", run_dir])
    assert config.args.device == "auto" and not config.args.ignore_cache


def test_restart_ignores_the_saved_run(tmp_path):
    run_dir = saved_run(tmp_path, "--hiddenGar", "32")
    config = resolve_run(["--pathDB", str(tmp_path), "--pathCheckpoint", run_dir, "--restart",
                          "--hiddenGar", "64"])
    assert config.resume is None and config.args.hiddenGar == 64


def test_a_cut_epoch_continues_only_with_the_processes_that_began_it(tmp_path):
    cut = {"batches_done": 3, "rngs": [{}, {}], "world_size": 2}
    path = tmp_path / "interrupted_checkpoint_4.pt"
    with pytest.raises(ConfigError, match="cut after 3 batches by 2 process"):
        check_processes(path, {"epoch": 4, "interrupted": cut}, 1)
    check_processes(path, {"epoch": 4, "interrupted": cut}, 2)
    check_processes(path, {"epoch": 4}, 3)  # a finished epoch: any number


@pytest.mark.parametrize("flags, name", [
    ([], "cpc"), (["--CPCCTC"], "cpcctc"), (["--criterion", "cpcctc"], "cpcctc"),
    (["--supervised"], "speaker"), (["--supervised", "--path_phone_data", "p"], "phone"),
    (["--supervised", "--path_phone_data", "p", "--CTC"], "phone_ctc")])
def test_the_criterion_a_command_line_trains(flags, name):
    assert criterion_name(parse_args(["--pathDB", "x", *flags])[0]) == name


def test_read_only_modes_do_not_count_the_run_directory_as_an_output(tmp_path):
    args, _ = parse_args(["--pathDB", "x", "--pathCheckpoint", "run", "--onlyCapture",
                          "--pathCaptureSave", "captures"])
    assert output_dirs(args) == [("--pathCaptureSave", "captures")]
    args, _ = parse_args(["--pathDB", "x", "--pathCheckpoint", "run"])
    assert output_dirs(args) == [("--pathCheckpoint", "run")]
