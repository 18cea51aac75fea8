"""Atomic run files, safe loading, corrupt-checkpoint fallback, keep-K, LR schedule."""
from __future__ import annotations

import os

import pytest
import torch

from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import CheckpointError
from cpc.utils.files import remove_stale_temp_files
from cpc.utils.optim import build_optimizer, lr_factor


def test_save_list_load_newest(tmp_path):
    for epoch in (0, 2, 10):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, epoch), {"gEncoder": {},
                                                                      "epoch": epoch,
                                                                      "w": torch.ones(2) * epoch})
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path)] == [0, 2, 10]  # numeric, not lexical
    epoch, path, state = ckpt.load_newest_checkpoint(tmp_path)
    assert epoch == 10 and state["w"].tolist() == [10.0, 10.0]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_corrupt_newest_falls_back_with_warning(tmp_path):
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), {"gEncoder": {}, "epoch": 1})
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 2), {"gEncoder": {}, "epoch": 2})
    data = ckpt.checkpoint_path(tmp_path, 2).read_bytes()
    ckpt.checkpoint_path(tmp_path, 2).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="checkpoint_2.pt is not a readable checkpoint"):
        epoch, _, state = ckpt.load_newest_checkpoint(tmp_path)
    assert epoch == 1 and state["epoch"] == 1


def test_loading_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "checkpoint_0.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="checkpoint_0.pt is not a readable checkpoint"):
        ckpt.load_checkpoint(path)


def test_failed_write_leaves_previous_file(tmp_path):
    target = tmp_path / "checkpoint_args.json"
    ckpt.write_json(target, {"a": 1})

    class Unserialisable:
        pass
    with pytest.raises(TypeError):
        ckpt.write_json(target, {"a": Unserialisable()})
    assert ckpt.read_json(target) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_args.json"]


def test_keep_last_k(tmp_path):
    for epoch in range(6):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, epoch), {})
    removed = ckpt.remove_old_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in removed) == [f"checkpoint_{e}.pt" for e in range(4)]
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]
    assert ckpt.remove_old_checkpoints(tmp_path, 0) == []


def test_lr_schedule():
    assert [lr_factor(e, None, -1) for e in range(3)] == [1.0, 1.0, 1.0]
    assert [lr_factor(e, 4, -1) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_factor(e, None, 2) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert [lr_factor(e, 2, 2) for e in range(6)] == [0.5, 1.0, 1.0, 1.0, 0.5, 0.5]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, rate = build_optimizer([param], 1e-3, 0.9, 0.999, 1e-8, 2, -1)
    seen = []
    for epoch in range(3):
        rate.set_epoch(epoch)
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3])


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 0), {"epoch": 0})
    stale = tmp_path / ".checkpoint_1.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path)] == [0] and not stale.exists()
