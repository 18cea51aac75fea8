"""Plots: the data shaping of the capture plots and run plots, and the files they write."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cpc.capture import plot_run, plots
from cpc.capture.writer import batch_file
from cpc.utils import checkpoint as ckpt

T, M, K = 20, 5, 3  # window frames, matched frames, heads' predictions
W = T - M  # anchors


# --------------------------------------------------------------------------- capture plots

def test_row_labels_follow_the_criterion_columns():
    assert plots.row_labels(5, plots.ColumnLayout(learn_blank=True, self_loop=True)) == [
        "blank", "self-loop $z_t$", "$P_{1}$", "$P_{2}$", "$P_{3}$"]
    assert plots.row_labels(4, plots.ColumnLayout(learn_blank=False, self_loop=True)) == [
        "self-loop $z_t$", "$P_{1}$", "$P_{2}$", "$P_{3}$"]
    assert plots.row_labels(3, plots.ColumnLayout(learn_blank=False, self_loop=False)) == [
        "$P_{1}$", "$P_{2}$", "$P_{3}$"]
    assert plots.row_labels(2, plots.UNKNOWN_LAYOUT) == ["column 0", "column 1"]
    with pytest.raises(ValueError, match="leave no prediction"):
        plots.row_labels(2, plots.ColumnLayout(learn_blank=True, self_loop=True))


def test_layout_from_args():
    saved = {"CPCCTCLearnBlank": True, "CPCCTCSelfLoop": False, "cpc_mode": "reverse"}
    assert plots.layout_from_args(saved) == plots.ColumnLayout(learn_blank=True, self_loop=False, reverse=True)
    assert plots.layout_from_args({}) == plots.ColumnLayout(learn_blank=False, self_loop=False, reverse=False)


def fake_columns(conv: torch.Tensor, blank: bool, self_loop: bool, reverse: bool = False
                 ) -> torch.Tensor:
    """(B, W, K', D) columns laid out as the CPC-CTC criterion does."""
    batch, _, dim = conv.shape
    columns = [torch.randn(batch, W, K, dim)]
    if self_loop:
        columns.insert(0, (conv.flip(1) if reverse else conv)[:, :W, None])
    if blank:
        columns.insert(0, torch.randn(dim).expand(batch, W, 1, dim))
    return torch.cat(columns, dim=2)


@pytest.mark.parametrize("blank, self_loop, reverse", [
    (True, True, False), (False, True, True), (True, False, False), (False, False, False)])
def test_infer_layout_from_the_captured_columns(blank, self_loop, reverse):
    conv = torch.randn(2, T, 8)
    layout = plots.infer_layout(fake_columns(conv, blank, self_loop, reverse), conv)
    assert layout == plots.ColumnLayout(learn_blank=blank, self_loop=self_loop, reverse=reverse)


def test_tiled_anchors_share_the_window_frame_axis():
    scores = -np.random.default_rng(0).random((W, M, K + 1))
    align = np.tile(np.array([0, 1, 1, 2, 3]), (W, 1))
    grid, paths, anchors = plots.tile_alignment(scores, align, T, reverse=False)
    assert anchors == [0, 5, 10]
    assert [list(frames) for frames, _ in paths] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10],
                                                      [11, 12, 13, 14, 15]]
    assert grid.shape == (K + 1, T)
    covered = ~np.isnan(grid).all(axis=0)
    assert list(np.flatnonzero(covered)) == list(range(1, 16))
    np.testing.assert_array_equal(grid[:, 6:11], scores[5].T)  # anchor 5: frames 6..10
    np.testing.assert_array_equal(paths[1][1], align[5])
    _, reversed_paths, reversed_anchors = plots.tile_alignment(scores, align, T, reverse=True)
    assert reversed_anchors == [19, 14, 9]
    assert list(reversed_paths[0][0]) == [18, 17, 16, 15, 14]


def test_masked_cells_are_blank():
    scores = np.full((W, M, 2), -1.0)
    scores[:, 0, 1] = -np.inf
    grid, _, _ = plots.tile_alignment(scores, np.zeros((W, M), dtype=int), T, reverse=False)
    assert np.isnan(grid[1, 1]) and grid[0, 1] == -1.0


def test_phone_segments_and_labels_that_never_overlap():
    phones = np.array([0, 0, 3, 3, 3, 7, 2, 2, 2, 2])
    assert plots.phone_segments(phones) == [(0, 2, 0), (2, 5, 3), (5, 6, 7), (6, 10, 2)]
    centres, widths = [1.0, 2.0, 2.5, 6.0, 6.5], [1.5, 1.5, 2.0, 1.0, 4.0]
    levels = plots.label_levels(centres, widths)
    assert levels == [0, 1, 2, 0, 1]
    for i in range(len(centres)):
        for j in range(i):
            if levels[i] == levels[j]:
                assert centres[j] + widths[j] / 2 <= centres[i] - widths[i] / 2


def test_busiest_windows():
    phones = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 0, 1, 1], [1, 2, 2, 3]])
    assert plots.busiest_windows(phones, 2) == [1, 3]


def test_class_colours_are_distinct():
    for n in (4, 25, 60):
        colours = plots.class_colours(n)
        assert len(colours) == n and len(set(colours)) == n


def write_capture(epoch_dir, n_windows: int = 6, batch: int = 3, blank: bool = True,
                  self_loop: bool = True, n_phones: int = 5) -> None:
    """A CPC-CTC capture with every kind, shaped as cpc.capture.writer saves it."""
    torch.manual_seed(0)
    ckpt.write_json(epoch_dir / "sequences.json",
                    [{"index": i, "path": f"spk{i}/c/spk{i}-c-0.flac", "stem": f"spk{i}-c-0",
                      "speaker": f"spk{i}", "n_samples": 16000} for i in range(2)])
    n_columns = K + int(blank) + int(self_loop)
    for first in range(0, n_windows, batch):
        last = first + batch - 1
        conv = torch.randn(batch, T, 8)
        seq = torch.tensor([i % 2 for i in range(first, last + 1)])
        tensors = {
            "conv_repr": conv, "ctx_repr": torch.randn(batch, T, 8),
            "speaker_align": seq[:, None].expand(batch, T),
            "phone_align": torch.randint(0, n_phones, (batch, T // 4)).repeat_interleave(4, 1),
            "pred": fake_columns(conv, blank, self_loop),
            "cpcctc_align": torch.sort(torch.randint(0, n_columns, (batch, W, M)), -1).values,
            "cpcctc_log_scores": -torch.rand(batch, W, M, n_columns),
            "origin": {"seq_index": seq, "seq_offset": torch.arange(batch) * 3200,
                       "frame_seq_index": seq[:, None].expand(batch, T)},
        }
        for kind, value in tensors.items():
            ckpt.save_torch(batch_file(epoch_dir, kind, first, last), value)
    ckpt.write_json(epoch_dir / "stats.json", {})  # written last: the capture is whole


def test_plot_epoch_writes_every_plot(tmp_path, capsys):
    write_capture(tmp_path / "cap" / "3")
    phones = tmp_path / "phones.txt"
    phones.write_text("".join(f"{i} PH{i}\n" for i in range(5)))
    assert plots.main([str(tmp_path / "cap" / "3"), "--out", str(tmp_path / "out"),
                       "--windows", "2", "--phones", str(phones)]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len([name for name in written if name.startswith("alignment_window")]) == 2
    assert {"pca_phone.png", "pca_speaker.png"} <= set(written)
    assert all((tmp_path / "out" / name).stat().st_size > 10_000 for name in written)
    assert "note:" not in capsys.readouterr().err  # layout inferred from pred + conv_repr


def test_plot_epoch_with_the_run_args_and_without_a_layout(tmp_path, capsys):
    epoch_dir = tmp_path / "cap" / "0"
    write_capture(epoch_dir, blank=False, self_loop=True)
    run = tmp_path / "run"
    ckpt.write_json(run / ckpt.ARGS_FILE, {"CPCCTCSelfLoop": True})
    assert plots.main([str(epoch_dir), "--out", str(tmp_path / "a"), "--windows", "1",
                       "--run", str(run)]) == 0
    for kind in ("pred", "conv_repr"):
        for file in (epoch_dir / kind).iterdir():
            file.unlink()
        (epoch_dir / kind).rmdir()
    assert plots.main([str(epoch_dir), "--out", str(tmp_path / "b"), "--windows", "1"]) == 0
    assert "pass --run RUN_DIR" in capsys.readouterr().err


# --------------------------------------------------------------------------- run plots

def full_logs() -> dict:
    return {
        "epoch": [0, 1, 2], "loss_train": [9.5, 9.0, 8.0], "loss_val": [9.4, 8.8, 8.9],
        "locAcc_train": [[0.1, 0.2], [0.2, 0.3], [0.3, 0.4]],
        "locAcc_val": [[0.1, 0.2], [0.2, 0.3], [0.3, 0.4]], "best_epoch": 1,
        "train_seconds": [10.0, 9.0, 9.0], "total_seconds": 40.0,
        "linsep_epoch": [0, 2], "speaker_best_val_acc": [0.3, 0.6],
        "speaker_mean_best_val_acc": [0.4, 0.7], "phone_best_val_acc": [0.2, 0.3],
        "phone_ctc_best_val_per": [0.9, 0.7],
        "health_z_cos_across": [0.7, 0.6, 0.99], "health_dead_units": [0.0, 0.1, 0.9],
        "health_steps": [{"step": s, "epoch": s // 10, "loss": 9.0, "z_cos_within": 0.8,
                          "z_cos_across": 0.7, "c_cos_within": 0.9, "c_cos_across": 0.8,
                          "dead_units": 0.0, "grad_encoder": 1.0, "grad_context": 0.1,
                          "score_margin": 0.01} for s in range(0, 30, 5)],
        "collapse_events": [{"action": "rollback", "step": 15, "epoch": 1, "message": "m",
                             "loss": 9.6, "z_cos_across": 0.99}],
    }


def write_run(run_dir, logs: dict) -> None:
    ckpt.write_json(run_dir / "checkpoint_logs.json", logs)


def test_loss_panels_keep_what_the_log_has():
    panels = plot_run.loss_panels(full_logs(), chance=9.6)
    assert [p.title for p in panels] == ["loss", "prediction accuracy (mean of locAcc over steps)"]
    loss = panels[0]
    assert loss.series["validation"] == ([0.0, 1.0, 2.0], [9.4, 8.8, 8.9])
    assert loss.levels == {"chance (9.6)": 9.6}
    assert loss.stars == {"best epoch (checkpoint_best.pt)": (1, 8.8)}
    assert panels[1].series["train"][1] == pytest.approx([0.15, 0.25, 0.35])


def test_pase_and_old_logs_omit_their_missing_panels():
    pase = {"epoch": [0, 1], "loss_train": [3.0, 2.0], "loss_val": [3.1, float("nan")],
            "locAcc_train": [[], []], "locAcc_val": [[], []],
            "worker_mfcc_train": [1.0, 0.8], "worker_mfcc_val": [1.1, 0.9]}
    panels = plot_run.loss_panels(pase, chance=None)
    assert [p.title for p in panels] == ["loss", "PASE worker losses"]
    assert panels[0].series["validation"] == ([0.0], [3.1])  # NaN dropped
    assert set(panels[1].series) == {"mfcc (train)", "mfcc (val)"}
    assert plot_run.probe_panels(pase) == [] and plot_run.health_panels(pase, None) == []
    old = {"epoch": [0, 1], "loss_train": [1, 2], "health_z_cos_across": [0.9, 0.8],
           "health_grad_encoder": [1.0, 2.0]}
    panels = plot_run.health_panels(old, None)
    assert [(p.title, p.x_label) for p in panels] == [
        ("cosine of frames (within / across windows)", "epoch"), ("gradient norm", "epoch")]
    assert panels[1].log_scale


def test_health_panels_over_steps_and_collapse_marks():
    logs = full_logs()
    panels = plot_run.health_panels(logs, chance=9.6)
    assert [p.title for p in panels] == [t for t, _, _ in plot_run.HEALTH_PANELS]
    assert all(p.x_label == "training step" for p in panels)
    assert list(panels[1].series) == ["z cos within", "z cos across", "c cos within",
                                      "c cos across"]
    assert panels[0].levels == {"chance (9.6)": 9.6}
    assert all(p.epoch_axis == ([0.0, 5.0, 15.0, 25.0], [0.0, 1.0, 2.0, 3.0]) for p in panels)
    assert plot_run.collapse_marks(logs, "training step") == [(15.0, "rollback")]
    assert plot_run.collapse_marks(logs, "epoch") == [(1.0, "rollback")]
    probes = plot_run.probe_panels(logs)
    assert [set(p.series) for p in probes] == [set(plot_run.PROBES.values()), {"phone (CTC)"}]


def test_plot_run_writes_the_pngs(tmp_path, capsys):
    write_run(tmp_path / "run", full_logs())
    assert plot_run.main([str(tmp_path / "run")]) == 0
    names = ["run_health.png", "run_loss.png", "run_probes.png"]
    assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == names
    assert all((tmp_path / "run" / "plots" / n).stat().st_size > 10_000 for n in names)
    write_run(tmp_path / "pase", {"epoch": [0], "loss_train": [1.0], "loss_val": [1.0]})
    assert plot_run.main([str(tmp_path / "pase"), "--out", str(tmp_path / "p")]) == 0
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["run_loss.png"]


def test_chance_loss_from_the_run_args(tmp_path, capsys):
    assert plot_run.chance_loss(tmp_path) is None
    ckpt.write_json(tmp_path / ckpt.ARGS_FILE, {"nPredicts": 3, "negativeSamplingExt": 8,
                                                "hiddenGar": 16, "hiddenEncoder": 16})
    assert plot_run.chance_loss(tmp_path) == pytest.approx(3 * math.log(9))
    (tmp_path / ckpt.ARGS_FILE).write_text("[1]")
    assert plot_run.chance_loss(tmp_path) is None
    assert "note: no chance level" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("{}", "holds no finished epoch"),
    ('{"epoch": []}', "holds no finished epoch"), ("{not json", "is not valid JSON")])
def test_plot_run_refuses_a_missing_or_empty_log(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "checkpoint_logs.json").write_text(content)
    assert plot_run.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (run / "plots").exists()
