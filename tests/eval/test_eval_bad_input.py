"""Bad input to the evaluation command lines (ABX, feature export, speaker classification,
linear separability) and to the hub: one ``error:`` line naming the culprit, exit status 2, no
traceback, nothing written; the hub raises a :class:`CheckpointError` naming the path given."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.eval import ABX
from cpc.eval import build_zeroSpeech_features as export
from cpc.eval import downstream_speaker as ds
from cpc.eval import linear_separability as linsep
from cpc.eval.make_abx_items import make_items, read_phone_symbols, write_item_file
from cpc.hub import CPCUpstream
from cpc.utils.errors import CheckpointError
from tests.conftest import write_tree
from tests.model.test_feature_loader import save_random_run

Main = Callable[[list[str]], int]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_random_run(tmp_path_factory.mktemp("bad_input_run") / "run", 5)


@pytest.fixture(scope="module")
def abx_inputs(tiny_corpus, tmp_path_factory) -> Path:
    """Item files of two and of eight tiny-corpus files (few.item, many.item: the latter forms
    cells of both modes) and one-hot features of every file."""
    root = tmp_path_factory.mktemp("bad_input_abx")
    stems = read_split_list(tiny_corpus / "train_split.txt")
    labels, n_phones = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    symbols = read_phone_symbols(tiny_corpus / "phones.txt")
    write_item_file(root / "few.item", make_items(labels, symbols, stems[:2]))
    write_item_file(root / "many.item", make_items(labels, symbols, stems[:8]))
    (root / "onehot").mkdir()
    for stem in stems:
        np.save(root / "onehot" / f"{stem}.npy", np.eye(n_phones, dtype=np.float32)[labels[stem]])
    return root


def run_main(main: Main, argv: list[str]) -> int:
    """Exit status of a command line, whether it returns it or argparse exits."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def files_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_one_error_line(code: int, capsys, culprits: list[str]) -> str:
    out, err = capsys.readouterr()
    report = f"rc={code}\n--- stderr ---\n{err}\n--- stdout (tail) ---\n{out[-1500:]}"
    assert code == 2, report
    assert "Traceback" not in err, report
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, report
    for culprit in culprits:
        assert culprit in error_lines[0], f"{culprit!r} not named\n{report}"
    return error_lines[0]


# --------------------------------------------------------------------------------------------
# Checkpoints: every command line and the hub
# --------------------------------------------------------------------------------------------

def copy_run(run_dir: Path, tmp: Path, with_args: bool = True) -> Path:
    target = tmp / "copy"
    target.mkdir()
    shutil.copy(run_dir / "checkpoint_5.pt", target)
    if with_args:
        shutil.copy(run_dir / "checkpoint_args.json", target)
    return target


def truncated(run_dir, tmp):
    path = copy_run(run_dir, tmp) / "checkpoint_5.pt"
    path.write_bytes(path.read_bytes()[:2000])
    return path, [f"{path} is not a readable checkpoint"]


def truncated_newest_of_a_directory(run_dir, tmp):
    run = copy_run(run_dir, tmp)
    (run / "checkpoint_9.pt").write_bytes((run / "checkpoint_5.pt").read_bytes()[:2000])
    return run, [f"{run / 'checkpoint_9.pt'} is not a readable checkpoint"]


def missing_file(run_dir, tmp):
    path = tmp / "nowhere" / "checkpoint_1.pt"
    return path, [f"checkpoint {path} does not exist"]


def missing_directory(run_dir, tmp):
    return tmp / "nowhere", [f"checkpoint {tmp / 'nowhere'} does not exist"]


def directory_without_checkpoint(run_dir, tmp):
    (tmp / "empty_run").mkdir()
    return tmp / "empty_run", [f"{tmp / 'empty_run'} holds no checkpoint_<N>.pt"]


def no_args_file(run_dir, tmp):
    run = copy_run(run_dir, tmp, with_args=False)
    return run / "checkpoint_5.pt", [f"{run} lacks checkpoint_args.json"]


def args_not_json(run_dir, tmp):
    run = copy_run(run_dir, tmp)
    (run / "checkpoint_args.json").write_text("{hiddenGar: 12,\n")
    return run / "checkpoint_5.pt", [f"{run / 'checkpoint_args.json'} is not valid JSON"]


def args_not_an_object(run_dir, tmp):
    run = copy_run(run_dir, tmp)
    (run / "checkpoint_args.json").write_text("[16, 12]\n")
    return run, [f"{run / 'checkpoint_args.json'} holds a JSON list"]


CHECKPOINT_FAULTS = {f.__name__: f for f in (
    truncated, truncated_newest_of_a_directory, missing_file, missing_directory,
    directory_without_checkpoint, no_args_file, args_not_json, args_not_an_object)}


def abx_cli(checkpoint, corpus, abx_root, out):
    return ABX.main, ["from_checkpoint", checkpoint, abx_root / "few.item", corpus, "--out", out,
                      "--device", "cpu"]


def export_cli(checkpoint, corpus, abx_root, out):
    return export.main, [corpus, out, checkpoint, "--device", "cpu"]


def speaker_cli(checkpoint, corpus, abx_root, out):
    return ds.main, [corpus, corpus / "train_split.txt", corpus / "val_split.txt", checkpoint,
                     "--out", out, "--device", "cpu"]


def linsep_cli(checkpoint, corpus, abx_root, out):
    return linsep.main, [corpus, corpus / "train_split.txt", corpus / "val_split.txt", checkpoint,
                         "--out", out, "--sizeWindow", "3200", "--n_process_loader",
                         "1", "--nEpoch", "1", "--device", "cpu"]


CLIS = {"ABX": abx_cli, "export": export_cli, "speaker": speaker_cli, "linsep": linsep_cli}


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS.values(), ids=CHECKPOINT_FAULTS.keys())
@pytest.mark.parametrize("cli", CLIS.values(), ids=CLIS.keys())
def test_bad_checkpoint_is_one_line_error(cli, fault, run_dir, tiny_corpus, abx_inputs, tmp_path,
                                          capsys):
    checkpoint, culprits = fault(run_dir, tmp_path)
    main, argv = cli(checkpoint, tiny_corpus, abx_inputs, tmp_path / "out")
    capsys.readouterr()
    assert_one_error_line(run_main(main, argv), capsys, culprits)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS.values(), ids=CHECKPOINT_FAULTS.keys())
def test_hub_names_the_bad_checkpoint(fault, run_dir, tmp_path):
    checkpoint, culprits = fault(run_dir, tmp_path)
    with pytest.raises(CheckpointError) as raised:
        CPCUpstream(str(checkpoint))
    for culprit in culprits:
        assert culprit in str(raised.value)


# --------------------------------------------------------------------------------------------
# Other bad input, one command line each
# --------------------------------------------------------------------------------------------

def abx_pre_computed(abx_root: Path, out: Path, item: Path | None = None,
                     features: Path | None = None) -> tuple[Main, list]:
    return ABX.main, ["from_pre_computed", features or abx_root / "onehot",
                      item or abx_root / "few.item", "--out", out]


def item_file_with_six_columns(corpus, abx_root, run_dir, tmp):
    item = tmp / "six.item"
    item.write_text("#file onset offset #phone prev-phone next-phone speaker\n"
                    "1133-926611-0000 0.10 0.20 a b c\n")
    return (*abx_pre_computed(abx_root, tmp / "out", item), [f"{item}:2", "expected 7 fields"])


def item_time_not_a_number(corpus, abx_root, run_dir, tmp):
    item = tmp / "nan_time.item"
    item.write_text("1133-926611-0000 0.1O 0.20 a b c 1133\n")
    return (*abx_pre_computed(abx_root, tmp / "out", item), [f"{item}:1", "must be numbers"])


def item_file_naming_absent_files(corpus, abx_root, run_dir, tmp):
    item = tmp / "absent.item"
    item.write_text("ghost-0-0001 0.10 0.20 a b c ghost\n")
    return (*abx_pre_computed(abx_root, tmp / "out", item),
            [str(item), "ghost-0-0001", "have no .npy features"])


def empty_features_directory(corpus, abx_root, run_dir, tmp):
    (tmp / "empty").mkdir()
    return (*abx_pre_computed(abx_root, tmp / "out", features=tmp / "empty"),
            [str(tmp / "empty"), "no file ending in '.npy'"])


def features_holding_nan(corpus, abx_root, run_dir, tmp):
    features = Path(shutil.copytree(abx_root / "onehot", tmp / "nan"))
    stem = read_split_list(corpus / "train_split.txt")[1]
    values = np.load(features / f"{stem}.npy")
    values[3:5] = np.nan
    np.save(features / f"{stem}.npy", values)
    return (*abx_pre_computed(abx_root, tmp / "out", abx_root / "many.item", features),
            [str(features / f"{stem}.npy"), "NaN or infinite values in 2 of"])


def abx_out_is_a_file(corpus, abx_root, run_dir, tmp):
    (tmp / "out").write_text("not a directory\n")
    return (*abx_pre_computed(abx_root, tmp / "out"), ["--out", str(tmp / "out"), "is a file"])


def abx_feature_size_zero(corpus, abx_root, run_dir, tmp):
    main, argv = abx_pre_computed(abx_root, tmp / "out")
    return main, argv + ["--feature_size", "0"], ["--feature_size", "positive"]


def export_into_an_existing_file(corpus, abx_root, run_dir, tmp):
    (tmp / "out").write_text("not a directory\n")
    return (export.main, [corpus, tmp / "out", run_dir, "--device", "cpu"],
            ["pathOut", str(tmp / "out"), "is a file"])


def export_of_audio_shorter_than_a_frame(corpus, abx_root, run_dir, tmp):
    (tmp / "db").mkdir()
    sf.write(tmp / "db" / "u1.wav", np.zeros(100, np.float32), 16000)
    sf.write(tmp / "db" / "u2.wav", np.zeros(3200, np.float32), 16000)
    return (export.main, [tmp / "db", tmp / "out", run_dir, "--file_extension", ".wav",
                          "--device", "cpu"],
            [str(tmp / "db" / "u1.wav"), "100 samples", "160"])


def speaker_corpus_of_one_speaker(corpus, abx_root, run_dir, tmp):
    for part in ("train", "val"):
        stems = read_split_list(corpus / f"{part}_split.txt")
        (tmp / f"{part}.txt").write_text("".join(f"{s}\n" for s in stems if s.startswith("1133-")))
    return (ds.main, [corpus, tmp / "train.txt", tmp / "val.txt", run_dir, "--out", tmp / "out",
                      "--device", "cpu"],
            [str(tmp / "train.txt"), "speaker 1133", "at least two"])


def speaker_max_seconds_below_one_frame(corpus, abx_root, run_dir, tmp):
    return (ds.main, [corpus, corpus / "train_split.txt", corpus / "val_split.txt", run_dir,
                      "--out", tmp / "out", "--max_seconds", "0.001", "--device", "cpu"],
            ["--max_seconds 0.001", "16 samples", "159"])


def speaker_file_shorter_than_a_frame(corpus, abx_root, run_dir, tmp):
    stems = write_tree(tmp / "db", {"100": [3200, 3200, 100], "200": [3200, 3200, 3200]})
    (tmp / "train.txt").write_text("".join(f"{s}\n" for s in stems[:2] + stems[3:5]))
    (tmp / "val.txt").write_text(f"{stems[2]}\n{stems[5]}\n")
    return (ds.main, [tmp / "db", tmp / "train.txt", tmp / "val.txt", run_dir, "--out",
                      tmp / "out", "--device", "cpu"],
            [str(tmp / "db" / "100" / "0" / f"{stems[2]}.flac"), "100 samples", "159"])


def speaker_out_under_a_file(corpus, abx_root, run_dir, tmp):
    (tmp / "file").write_text("not a directory\n")
    return (ds.main, [corpus, corpus / "train_split.txt", corpus / "val_split.txt", run_dir,
                      "--out", tmp / "file" / "out", "--nEpoch", "1", "--device", "cpu"],
            ["--out", str(tmp / "file"), "is a file"])


def linsep_split_list_of_missing_stems(corpus, abx_root, run_dir, tmp):
    (tmp / "train.txt").write_text("ghost-0-0001\nghost-0-0002\n")
    main, argv = linsep_cli(run_dir, corpus, abx_root, tmp / "out")
    argv[1] = tmp / "train.txt"
    return main, argv, [str(tmp / "train.txt"), "matches no file"]


def linsep_output_is_a_file(corpus, abx_root, run_dir, tmp):
    (tmp / "out").write_text("not a directory\n")
    return (*linsep_cli(run_dir, corpus, abx_root, tmp / "out"),
            ["--out", str(tmp / "out"), "is a file"])


ERROR_CASES = {f.__name__: f for f in (
    item_file_with_six_columns, item_time_not_a_number, item_file_naming_absent_files,
    empty_features_directory, features_holding_nan, abx_out_is_a_file, abx_feature_size_zero,
    export_into_an_existing_file, export_of_audio_shorter_than_a_frame,
    speaker_corpus_of_one_speaker, speaker_max_seconds_below_one_frame,
    speaker_file_shorter_than_a_frame, speaker_out_under_a_file,
    linsep_split_list_of_missing_stems, linsep_output_is_a_file)}


@pytest.mark.parametrize("prepare", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_input_is_one_line_error(prepare, run_dir, tiny_corpus, abx_inputs, tmp_path, capsys):
    main, argv, culprits = prepare(tiny_corpus, abx_inputs, run_dir, tmp_path)
    before = files_under(tmp_path)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run_main(main, argv)
    assert_one_error_line(code, capsys, culprits)
    assert files_under(tmp_path) == before  # nothing written
