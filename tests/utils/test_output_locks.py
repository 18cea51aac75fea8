"""Two writers of one output: the second stops with training's message and exit status 2, and
writes nothing. The test holds the lock (as a first process would) and runs the tool."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from cpc.data.splits import read_split_list
from cpc.eval import ABX, common_voices_eval, downstream_speaker, linear_separability
from cpc.eval import build_zeroSpeech_features as export
from cpc.model import build_model
from cpc.units import cluster, onehot, quantize
from cpc.units.clusters import args_path, clustering_content, save_clustering
from cpc.utils import checkpoint as ckpt
from cpc.utils.files import exclusive_lock
from tests.eval.test_eval_bad_input import abx_inputs  # noqa: F401 (a fixture)
from tests.eval.test_eval_common_voices import voices  # noqa: F401 (a fixture)
from tests.model.test_feature_loader import save_run, tiny_args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("locks") / "run"
    save_run(run, tiny_args(), {0: build_model(tiny_args()).state_dict()})
    return run / "checkpoint_0.pt"


def corpus(db: Path) -> list:
    return [db, db / "train_split.txt", db / "val_split.txt"]


# Each case: (the tool's main, its argv given the fixtures and the output directory D,
#             what the tool calls itself, the one file it locks in D or None for D itself)
Case = tuple[Callable[[list[str]], int], Callable[..., list], str, "str | None"]
CASES: dict[str, Case] = {
    "feature export": (export.main, lambda f, out: [f["db"], out, f["ckpt"],
                                                    "--file_extension", ".flac"],
                       "feature export", None),
    "ABX": (ABX.main, lambda f, out: ["from_pre_computed", f["abx"] / "onehot",
                                      f["abx"] / "many.item", "--out", out,
                                      "--file_extension", ".npy"],
            "ABX evaluation", "ABX_scores.json"),
    "probes": (linear_separability.main,
               lambda f, out: [*corpus(f["db"]), "--features", "mfcc", "--nEpoch", "1",
                               "--out", out],
               "probe run", None),
    "speaker classification": (downstream_speaker.main,
                               lambda f, out: [*corpus(f["db"]), f["ckpt"], "--out", out],
                               "speaker classification", None),
    "phone recogniser": (common_voices_eval.main,
                         lambda f, out: ["train", f["voices"]["clips"], f["voices"]["phones"],
                                         f["voices"]["checkpoint"], "--pathTrain",
                                         f["voices"]["train"], "--nEpochs", "1", "-o", out],
                         "phone recogniser training", None),
    "clustering": (cluster.main, lambda f, out: [f["ckpt"], out / "clustering.pt",
                                                 "--pathDB", f["db"], "--recursionLevel", "1"],
                   "clustering", None),
    "quantization": (quantize.main, lambda f, out: [f["clustering"], f["db"], out,
                                                    "--file_extension", ".flac"],
                     "quantization", "quantized_outputs.txt"),
    "one-hot export": (onehot.main, lambda f, out: [f["units"], out], "one-hot export", None),
}


@pytest.fixture(scope="module")
def inputs(tiny_corpus, checkpoint, abx_inputs, voices, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lock_inputs")
    save_clustering(root / "clustering.pt", clustering_content(torch.randn(4, 12), encoder_layer=False))
    ckpt.write_json(args_path(root / "clustering.pt"),
                    {"features": "checkpoint", "pathCheckpoint": str(checkpoint)})
    stem = read_split_list(tiny_corpus / "train_split.txt")[0]
    (root / "units.txt").write_text(f"{stem}\t1,2,3\n")
    return {"db": tiny_corpus, "ckpt": checkpoint, "abx": abx_inputs, "voices": voices,
            "clustering": root / "clustering.pt", "units": root / "units.txt"}


@pytest.mark.parametrize("case", CASES)
def test_a_second_writer_of_an_output_is_refused(case, inputs, tmp_path, capsys):
    main, argv, what, output = CASES[case]
    out = tmp_path / "out"
    lock_file = f".{output}.lock" if output else ".lock"
    with exclusive_lock(out, "first writer", output=output):
        assert main([str(a) for a in argv(inputs, out)]) == 2
        assert sorted(p.name for p in out.iterdir()) == [lock_file]  # nothing written
    err = capsys.readouterr().err.strip()
    target = out / output if output else out
    assert err.startswith(f"error: {target} is in use by process {os.getpid()} on "), err
    assert (f"two {what}s writing one {'file' if output else 'directory'} would overwrite "
            f"each other's files; wait for it, or choose another directory") in err, err
    assert "\n" not in err, err


def test_quantized_splits_of_one_directory_run_side_by_side(inputs, tmp_path):
    out = tmp_path / "q"
    with exclusive_lock(out, "quantization", output="quantized_outputs_split_1-2.txt"):
        assert quantize.main([str(inputs["clustering"]), str(inputs["db"]), str(out),
                              "--file_extension", ".flac", "--split", "2-2",
                              "--debug"]) == 0
    assert (out / "quantized_outputs_split_2-2.txt").is_file()
