"""Capture: files and shapes per flag, --onlyCapture, the loader, stats in logs, refusals."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from cpc import train
from cpc.capture.loader import CaptureLoader, capture_epochs
from tests.train.test_train import SMALL, corpus_args

FRAMES = 3200 // 160  # SMALL uses --sizeWindow 3200
K = 3  # SMALL uses --nPredicts 3


def run(argv) -> int:
    return train.main([str(a) for a in argv])


def capture_flags(corpus, save, *extra) -> list:
    return ["--pathCaptureDS", corpus / "val_split.txt", "--captureDStotNr", "2",
            "--pathCaptureSave", save, "--path_phone_data",
            corpus / "converted_aligned_phones.txt", *extra]


def digest(path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tiny_corpus, tmp_path_factory):
    """A one-epoch CPC run that captured everything and reprDiff stats at epoch 0."""
    root = tmp_path_factory.mktemp("capture")
    stats_dir = root / "hist"
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", root / "run", "--nEpoch", "1"]
    argv += capture_flags(tiny_corpus, root / "cap", "--captureEachEpochs", "1",
                          "--captureEverything", "--captureSetStats",
                          f"reprDiff:cosine,ctx_repr,0.05,{stats_dir}")
    assert run(argv) == 0
    return root


def test_capture_everything_writes_each_kind_with_its_shape(trained_run):
    epoch_dir = trained_run / "cap" / "0"
    kinds = sorted(p.name for p in epoch_dir.iterdir() if p.is_dir())
    assert kinds == ["conv_repr", "ctx_repr", "origin", "phone_align", "pred", "speaker_align"]
    names = sorted(p.name for p in (epoch_dir / "ctx_repr").iterdir())
    assert names[0].startswith("ctx_repr_batch0-")
    for batch in CaptureLoader(trained_run / "cap"):
        n = batch["last"] - batch["first"] + 1
        assert batch["conv_repr"].shape == (n, FRAMES, 32)
        assert batch["ctx_repr"].shape == (n, FRAMES, 32)
        assert batch["speaker_align"].shape == (n, FRAMES)
        assert batch["phone_align"].shape == (n, FRAMES)
        assert batch["pred"].shape == (n, FRAMES - K, K, 32)
        assert batch["origin"]["frame_seq_index"].shape == (n, FRAMES)
        assert len(batch["files"]) == n and all(f.endswith(".flac") for f in batch["files"])


def test_captured_windows_trace_back_to_their_audio(trained_run, tiny_corpus):
    loader = CaptureLoader(trained_run / "cap", only=["speaker_align"])
    assert len({s["path"] for s in loader.sequences}) == 2  # --captureDStotNr 2
    speakers = {s["index"]: s["speaker"] for s in loader.sequences}
    first = next(iter(loader))
    assert first["files"][0] == loader.sequences[int(first["origin"]["seq_index"][0])]["path"]
    # every frame's speaker is the speaker of the file that frame came from
    from cpc.data.listing import findAllSeqs
    _, names = findAllSeqs(tiny_corpus, ".flac")
    for batch in loader:
        frame_files = batch["origin"]["frame_seq_index"]
        expected = [[names.index(speakers[int(i)]) for i in row] for row in frame_files]
        assert batch["speaker_align"].tolist() == expected


def test_stats_go_to_logs_tensorboard_and_stats_json(trained_run):
    stats = json.loads((trained_run / "cap" / "0" / "stats.json").read_text())
    key = "reprDiff_ctx_repr_cosine_by0.05_mean"
    assert 0 <= stats[key] <= 2 and stats["reprDiff_ctx_repr_cosine_by0.05_count"] > 0
    logs = json.loads((trained_run / "run" / "checkpoint_logs.json").read_text())
    assert logs["capture_epoch"] == [0] and logs["capture_stats"][0][key] == stats[key]
    assert (trained_run / "hist" / "reprDiff_ctx_repr_cosine_by0.05_0.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(trained_run / "run" / "tensorboard"))
    events.Reload()
    assert f"stats/{key}" in events.Tags()["scalars"]


def test_only_capture_leaves_the_run_untouched(trained_run, tiny_corpus, capsys):
    before = digest(trained_run / "run")
    save = trained_run / "only"
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained_run / "run", "--onlyCapture",
                                       "--device", "cpu"]
    argv += capture_flags(tiny_corpus, save, "--captureCtxRepr", "--captureSetStats",
                          f"reprDiff:euclid,conv_repr,0.5,{trained_run / 'hist2'}")
    assert run(argv) == 0
    assert digest(trained_run / "run") == before
    assert capture_epochs(save) == [0]
    assert sorted(p.name for p in (save / "0").iterdir()) == \
        ["ctx_repr", "origin", "sequences.json", "stats.json"]
    assert "reprDiff_conv_repr_euclid_by0.5_mean" in \
        json.loads((save / "0" / "stats.json").read_text())
    # the same capture twice gives the same tensors (deterministic)
    again = trained_run / "again"
    assert run([a if a != save else again for a in argv]) == 0
    for a, b in zip(CaptureLoader(save), CaptureLoader(again)):
        assert torch.equal(a["ctx_repr"], b["ctx_repr"])


def test_only_capture_refuses_a_contradicting_architecture(trained_run, tiny_corpus, capsys):
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained_run / "run", "--onlyCapture",
                                       "--hiddenGar", "64"]
    argv += capture_flags(tiny_corpus, trained_run / "x", "--captureCtxRepr")
    assert run(argv) == 2
    assert "--hiddenGar 64 contradicts" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--captureCPCCTCalign", "--captureEachEpochs", "1"], "--captureCPCCTCalign needs --CPCCTC"),
    (["--captureCtxRepr"], "need --captureEachEpochs"),
    (["--onlyCapture", "--captureCtxRepr"], "--onlyCapture needs a trained model"),
    (["--captureEachEpochs", "1", "--captureSetStats", "reprDiff:cos,ctx_repr,1,d"],
     "unknown metric 'cos'"),
])
def test_bad_capture_flags_are_refused(tiny_corpus, tmp_path, capsys, flags, message):
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run"]
    argv += capture_flags(tiny_corpus, tmp_path / "cap", *flags)
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_loader_errors_name_what_is_missing(trained_run):
    with pytest.raises(ValueError, match="no capture of cpcctc_align"):
        CaptureLoader(trained_run / "cap", only=["cpcctc_align"])
    with pytest.raises(FileNotFoundError, match="holds no capture"):
        CaptureLoader(trained_run / "run")


def test_plots_of_a_cpc_capture(trained_run, tiny_corpus):
    from cpc.capture.plots import main as plot_main
    out = trained_run / "plots"
    assert plot_main([str(trained_run / "cap" / "0"), "--out", str(out), "--phones",
                      str(tiny_corpus / "phones.txt")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pca_phone.png", "pca_speaker.png"]


def test_cpcctc_capture_everything_and_alignment_plots(tiny_corpus, tmp_path):
    cpcctc = ["--CPCCTC", "--CPCCTCNumMatched", "5", "--CPCCTCSelfLoop", "--CPCCTCSkipBeg", "1",
              "--CPCCTCSkipEnd", "1"]
    argv = corpus_args(tiny_corpus) + SMALL + cpcctc + ["--pathCheckpoint", tmp_path / "run",
                                                        "--nEpoch", "1"]
    argv += capture_flags(tiny_corpus, tmp_path / "cap", "--captureEachEpochs", "1",
                          "--captureEverything")
    assert run(argv) == 0
    window = FRAMES - 5
    loader = CaptureLoader(tmp_path / "cap")
    assert set(loader.kinds) == {"conv_repr", "ctx_repr", "speaker_align", "phone_align", "pred",
                                 "cpcctc_align", "cpcctc_log_scores"}
    for batch in loader:
        n = batch["last"] - batch["first"] + 1
        assert batch["pred"].shape == (n, window, K + 1, 32)  # self-loop column first
        assert batch["cpcctc_align"].shape == (n, window, 5)
        assert batch["cpcctc_log_scores"].shape == (n, window, 5, K + 1)
        align = batch["cpcctc_align"]
        assert int(align.min()) >= 0 and int(align.max()) <= K
        assert bool((align[..., 1:] >= align[..., :-1]).all())  # monotone
    from cpc.capture.plots import main as plot_main
    assert plot_main([str(tmp_path / "cap" / "0"), "--out", str(tmp_path / "plots"),
                      "--windows", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len([n for n in names if n.startswith("alignment_window")]) == 2  # busiest windows
    assert names[2:] == ["pca_phone.png", "pca_speaker.png"]
