"""What a GPU user gets from train.py's device setup, checked without a GPU by pretending
CUDA is there: the torchrun hint for several GPUs, TF32, and the CPU-only allocator setting."""
from __future__ import annotations

import pytest
import torch

from cpc import train
from cpc.options import build_parser


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: seen.append("mallopt"))
    monkeypatch.setattr(train, "set_tf32", lambda enabled: seen.append(f"tf32={enabled}"))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    return seen


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def args_of(*flags: str):
    return build_parser().parse_args(["--pathDB", "x", *flags])


def test_one_process_on_several_gpus_is_told_the_torchrun_command(monkeypatch, calls, capsys):
    pretend_gpus(monkeypatch, 4)
    device = train.prepare_device(args_of())
    assert device.type == "cuda"
    err = capsys.readouterr().err
    assert "4 GPUs are visible but this single process trains on one" in err
    assert "torchrun --standalone --nproc_per_node 4 cpc/train.py" in err
    assert calls == ["tf32=True"]  # and no CPU allocator setting
    assert torch.backends.cudnn.benchmark


def test_one_gpu_is_quiet_and_no_tf32_is_honoured(monkeypatch, calls, capsys):
    pretend_gpus(monkeypatch, 1)
    train.prepare_device(args_of("--no_tf32", "--deterministic"))
    assert capsys.readouterr().err == ""
    assert calls == ["tf32=False"] and not torch.backends.cudnn.benchmark


def test_the_allocator_setting_is_for_cpu_runs_only(calls):
    assert train.prepare_device(args_of("--device", "cpu")).type == "cpu"
    assert calls == ["mallopt"]
