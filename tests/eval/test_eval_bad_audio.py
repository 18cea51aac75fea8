"""NaN and infinite audio in the tools that read audio besides training (ABX from_checkpoint,
feature export, speaker classification, the probes, the unit tools): by default one ``error:``
line naming every such file, exit status 2 and nothing written; ``--bad_audio skip`` leaves
each out with a warning naming it."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.eval import ABX
from cpc.eval import build_zeroSpeech_features as export
from cpc.eval import common_voices_eval as cv
from cpc.eval import downstream_speaker as ds
from cpc.eval import linear_separability as linsep
from cpc.eval.make_abx_items import make_items, read_phone_symbols, write_item_file
from cpc.units import cluster, quantize
from tests.data.test_bad_audio import damage, float_corpus, split_file
from tests.eval.test_eval_bad_input import assert_one_error_line, files_under, run_main
from tests.model.test_feature_loader import save_random_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_random_run(tmp_path_factory.mktemp("bad_audio_run") / "run", 5)


@pytest.fixture
def damaged(tiny_corpus, tmp_path) -> tuple[Path, Path, Path]:
    """A float-WAV corpus of 4 training and 2 validation files (an item file of all six), one
    training file with 12 NaN samples and one validation file with an infinite one."""
    root = float_corpus(tiny_corpus, tmp_path / "db", n_train=4, n_val=2)
    labels, _ = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    shutil.copy(tiny_corpus / "converted_aligned_phones.txt", root / "phones.txt")
    stems = read_split_list(root / "train_split.txt") + read_split_list(root / "val_split.txt")
    write_item_file(root / "all.item", make_items(
        labels, read_phone_symbols(tiny_corpus / "phones.txt"), stems))
    nan_file, inf_file = split_file(root, "train", 1), split_file(root, "val", 0)
    damage(nan_file, nan_at=tuple(range(345, 357)))
    damage(inf_file, inf_at=(9,))
    return root, nan_file, inf_file


def abx(root: Path, run: Path, out: Path) -> tuple:
    return ABX.main, ["from_checkpoint", run, root / "all.item", root, "--file_extension",
                      ".wav", "--out", out, "--device", "cpu"]


def export_features(root: Path, run: Path, out: Path) -> tuple:
    return export.main, [root, out, run, "--file_extension", ".wav", "--device", "cpu"]


def speaker(root: Path, run: Path, out: Path) -> tuple:
    return ds.main, [root, root / "train_split.txt", root / "val_split.txt", run, "--out", out,
                     "--file_extension", ".wav", "--nEpoch", "1", "--device", "cpu"]


def probes(root: Path, run: Path, out: Path) -> tuple:
    return linsep.main, [root, root / "train_split.txt", root / "val_split.txt", run, "--out",
                         out, "--file_extension", ".wav", "--sizeWindow", "3200",
                         "--n_process_loader", "1", "--nEpoch", "1", "--device", "cpu"]


def phone_recognition(root: Path, run: Path, out: Path) -> tuple:
    return cv.main, ["train", root, root / "phones.txt", run / "checkpoint_5.pt", "--pathTrain",
                     root / "train_split.txt", "--pathVal", root / "val_split.txt",
                     "--file_extension", ".wav", "-o", out, "--nEpochs", "1", "--freeze",
                     "--device", "cpu"]


def units_cluster(root: Path, run: Path, out: Path) -> tuple:
    return cluster.main, [run / "checkpoint_5.pt", out / "clustering.pt", "--pathDB", root,
                          "--extension", ".wav", "--nClusters", "4", "--MAX_ITER", "1",
                          "--n_process_loader", "1"]


def units_quantize(root: Path, run: Path, out: Path) -> tuple:
    # the audio is checked before the clustering checkpoint is read
    return quantize.main, [out / "no_clustering_needed.pt", root, out / "quantized",
                           "--file_extension", "wav"]


TOOLS = {f.__name__: f for f in (abx, export_features, speaker, probes, phone_recognition,
                                 units_cluster, units_quantize)}


@pytest.mark.parametrize("tool", TOOLS.values(), ids=TOOLS.keys())
def test_nan_audio_is_refused_naming_every_file(tool, damaged, run_dir, tmp_path, capsys):
    root, nan_file, inf_file = damaged
    main, argv = tool(root, run_dir, tmp_path / "out")
    before = files_under(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run_main(main, argv)
    line = assert_one_error_line(code, capsys, [
        f"{nan_file} holds 12 NaN / 0 infinite samples (first at sample 345)",
        f"{inf_file} holds 0 NaN / 1 infinite samples (first at sample 9)", "--bad_audio skip"])
    assert line.startswith("error: 2 files hold NaN or infinite samples")
    assert files_under(tmp_path) == before  # nothing written


def run_skipping(main, argv: list, capsys) -> list[str]:
    """Run with --bad_audio skip; the warnings shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_main(main, argv + ["--bad_audio", "skip"])
    assert code == 0, capsys.readouterr().err
    return [str(w.message) for w in caught]


def assert_skipped(shown: list[str], *paths: Path) -> None:
    for path in paths:
        assert [m for m in shown if m.startswith(f"skipping {path}: it holds")], shown


def test_export_skips_bad_audio_with_a_warning(damaged, run_dir, tmp_path, capsys):
    root, nan_file, inf_file = damaged
    shown = run_skipping(*export_features(root, run_dir, tmp_path / "out"), capsys)
    assert_skipped(shown, nan_file, inf_file)
    written = sorted(p.stem for p in (tmp_path / "out").iterdir())
    assert len(written) == 4 and nan_file.stem not in written and inf_file.stem not in written
    assert all(np.isfinite(np.load(p)).all() for p in (tmp_path / "out").iterdir())


def test_abx_skips_the_items_of_bad_audio_with_a_warning(damaged, run_dir, tmp_path, capsys):
    root, nan_file, inf_file = damaged
    shown = run_skipping(*abx(root, run_dir, tmp_path / "out"), capsys)
    assert_skipped(shown, nan_file, inf_file)
    assert (tmp_path / "out" / "ABX_scores.json").is_file()


def test_probes_skip_bad_audio_with_a_warning(damaged, run_dir, tmp_path, capsys):
    root, nan_file, inf_file = damaged
    shown = run_skipping(*probes(root, run_dir, tmp_path / "out"), capsys)
    assert_skipped(shown, nan_file, inf_file)
    assert (tmp_path / "out" / "results.json").is_file()
