"""--config FILE.yaml: precedence, unknown keys, types, safe loading, PASE settings, shipped configs."""
import argparse
from pathlib import Path

import pytest

from cpc.config_file import load_config
from cpc.utils.optim import pase_lr_factor
from cpc.utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def small_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    parser.add_argument("--nEpoch", type=int, default=200)
    parser.add_argument("--learningRate", type=float, default=2e-4)
    parser.add_argument("--samplingType", default="samespeaker", choices=["samespeaker", "uniform"])
    parser.add_argument("--sizeWindow", type=int, default=20480)
    parser.add_argument("--pathTrain", type=str, default=None)
    parser.add_argument("--load", type=str, nargs="*", default=None)
    parser.add_argument("--debug", action="store_true")
    return parser


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def parse(parser: argparse.ArgumentParser, path: Path, argv: list[str]) -> tuple[argparse.Namespace, dict]:
    """What train.py does: file values become defaults, then the command line is parsed."""
    defaults, pase = load_config(path, parser)
    parser.set_defaults(**defaults)
    return parser.parse_args(argv), pase


def test_command_line_beats_config_beats_parser_defaults(tmp_path):
    path = write(tmp_path, "nEpoch: 3\nlearningRate: 1e-3\nsamplingType: uniform\ndebug: true\nload: ckpt.pt\n")
    args, _ = parse(small_parser(), path, ["--config", str(path), "--nEpoch", "7"])
    assert args.nEpoch == 7 and args.learningRate == 1e-3 and args.samplingType == "uniform"
    assert args.debug is True and args.load == ["ckpt.pt"] and args.sizeWindow == 20480
    args, _ = parse(small_parser(), path, ["--learningRate", "0.5"])
    assert args.nEpoch == 3 and args.learningRate == 0.5


def test_pase_settings_defaults_chunk_size_and_workers(tmp_path):
    path = write(tmp_path, "chunk_size: 16000\nencoder_lr_start: 2e-4\nlr_update_interval: 5\n"
                           "workers_config:\n  regressor:\n    mfcc: {n_mfcc: 13}\n  classifier: [lim]\n")
    defaults, pase = load_config(path, small_parser())
    assert defaults == {"sizeWindow": 16000}
    assert pase["encoder_lr_start"] == 2e-4 and pase["lr_update_interval"] == 5
    assert pase["worker_lr_start"] == 5e-4 and pase["decay_factor"] == 0.5 and pase["num_ckpts_keep"] == 0
    assert pase["workers_config"] == {"regressor": {"mfcc": {"n_mfcc": 13}}, "classifier": {"lim": {}}}
    _, empty = load_config(write(tmp_path, ""), small_parser())
    assert empty["workers_config"] == {"regressor": {}, "classifier": {}}


def test_unknown_keys_are_named_with_the_nearest_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) chunksize \(did you mean chunk_size\?\), "
                                          r"nEpochs \(did you mean nEpoch\?\)"):
        load_config(write(tmp_path, "nEpochs: 3\nchunksize: 160\n"), small_parser())
    with pytest.raises(ConfigError, match=r"unknown regressor 'mfc'"):
        load_config(write(tmp_path, "workers_config: {regressor: [mfc]}\n"), small_parser())


@pytest.mark.parametrize("text,message", [
    ("nEpoch: ten\n", "nEpoch expects an integer; got 'ten'"),
    ("nEpoch: 2.5\n", "nEpoch expects an integer"),
    ("learningRate: [1, 2]\n", "learningRate expects a single value"),
    ("debug: 1\n", "debug is an on/off flag"),
    ("pathTrain: 12\n", "pathTrain expects a string"),
    ("samplingType: random\n", "'random' is not one of samespeaker, uniform"),
    ("nEpoch:\n", "nEpoch cannot be empty"),
    ("chunk_size: 16001\n", "chunk_size 16001 must be a positive multiple of 160 samples"),
    ("chunk_size: 3200\nsizeWindow: 1600\n", "contradicts sizeWindow"),
    ("decay_factor: 1.5\n", "decay_factor must be > 0 and <= 1"),
    ("lr_update_interval: 0\n", "lr_update_interval must be >= 1"),
    ("worker_lr_start: fast\n", "worker_lr_start expects a number"),
    ("workers_config: [lps]\n", "workers_config must be a mapping"),
    ("- nEpoch\n", "must hold a mapping"),
])
def test_wrong_types_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text), small_parser())


def test_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"nEpoch: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
                           f"['{marker}']]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, small_parser())
    assert not marker.exists()
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", small_parser())


def test_lr_decays_by_the_factor_every_interval():
    assert [pase_lr_factor(epoch, 30, 0.5) for epoch in (0, 29, 30, 59, 60, 95)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError):
        pase_lr_factor(3, 0, 0.5)


@pytest.mark.parametrize("name", ["pase.yaml", "pase_plus.yaml"])
def test_shipped_configs_load_against_train_parser(name):
    from cpc.options import build_parser
    parser = build_parser()
    dests = {action.dest for action in parser._actions}
    if "pase_qrnn" not in dests:  # the flags train.py's Architecture group adds for the PASE encoder
        parser.add_argument("--pase_qrnn", action="store_true")
        parser.add_argument("--pase_skip", action="store_true")
        parser.add_argument("--pase_qrnn_layers", type=int, default=1)
    defaults, pase = load_config(CONFIGS / name, parser)
    assert defaults["encoder_type"] == "pase" and defaults["sizeWindow"] == 16000
    assert defaults["samplingType"] == "uniform" and defaults["pase_qrnn"] is True
    assert {"waveform", "lps", "mfcc", "prosody"} <= set(pase["workers_config"]["regressor"])
    assert {"lim", "gim"} <= set(pase["workers_config"]["classifier"])
    if name == "pase_plus.yaml":
        assert defaults["pase_skip"] is True and "spc" in pase["workers_config"]["classifier"]
        assert {"fbank", "lps_long", "mfcc_long"} <= set(pase["workers_config"]["regressor"])


def test_the_recipe_settings_and_flags_come_from_their_declaration():
    from cpc.config_file import PASE_SETTINGS
    from cpc.criterion.recipe import PaseOptions
    from cpc.options import build_parser
    assert PASE_SETTINGS == {  # (type, default, lowest, highest): PASE's recipe keys
        "ckpt_save_interval": (int, 1, 1, None), "num_ckpts_keep": (int, 0, 0, None),
        "encoder_lr_start": (float, 5e-4, 0, None), "worker_lr_start": (float, 5e-4, 0, None),
        "lr_update_interval": (int, 30, 1, None), "decay_factor": (float, 0.5, 0, 1)}
    args = build_parser().parse_args([])
    assert (args.config, args.pase_stats_batches) == (PaseOptions.config,
                                                      PaseOptions.pase_stats_batches)
