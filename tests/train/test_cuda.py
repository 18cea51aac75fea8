"""The CUDA tier: ``pytest -m cuda`` on a GPU machine (``bench/gpu_check.sh`` runs it); every
test here is skipped without CUDA.

One epoch of each training mode, the cupy QRNN kernel against torch, bf16 / fp16 steps, a
resume, at most one host synchronisation per logging step (counted by torch itself), and NCCL
with two ranks when two GPUs exist.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from cpc import train
from cpc.utils import checkpoint as ckpt
from cpc.utils import optim
from tests.train.test_train import SMALL, corpus_args

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[2]
ON_CUDA = [a for a in SMALL if a not in ("--device", "cpu")] + ["--device", "cuda"]
MODES = {
    "cpc": [],
    "cpcctc": ["--CPCCTC", "--CPCCTCNumMatched", "5", "--CPCCTCSelfLoop",
               "--rnnMode", "transformer"],
    "pase_qrnn": ["--config", str(REPO / "configs" / "pase.yaml"), "--sizeWindow", "4800",
                  "--pase_stats_batches", "2", "--samplingType", "uniform"],
}


def cuda_run(tiny_corpus, out: Path, *flags) -> int:
    small = list(ON_CUDA)
    if "--config" in flags:  # a PASE recipe sets its own learning rates
        del small[small.index("--learningRate"):small.index("--learningRate") + 2]
    return train.main([str(a) for a in corpus_args(tiny_corpus) + small +
                       ["--pathCheckpoint", out, *flags]])


@pytest.mark.parametrize("mode", list(MODES))
def test_one_epoch_of_each_mode(tiny_corpus, tmp_path, mode, capsys):
    assert cuda_run(tiny_corpus, tmp_path / "run", "--nEpoch", "1", *MODES[mode]) == 0
    logs = json.loads((tmp_path / "run" / ckpt.LOGS_FILE).read_text())
    assert all(x == x for x in logs["loss_train"] + logs["loss_val"])  # finite, not NaN
    if mode == "pase_qrnn":
        assert "QRNN recurrence: cupy on cuda" in capsys.readouterr().out


def test_cupy_qrnn_kernel_matches_torch():
    pytest.importorskip("cupy")
    from cpc.qrnn import forget_mult as fm
    fm_module = __import__("cpc.qrnn.forget_mult", fromlist=["x"])
    generator = torch.Generator(device="cuda").manual_seed(0)
    f = torch.rand(128, 8, 256, device="cuda", generator=generator).requires_grad_()
    z = torch.randn(128, 8, 256, device="cuda", generator=generator).requires_grad_()
    h0 = torch.randn(8, 256, device="cuda", generator=generator).requires_grad_()
    assert fm_module.select_backend(f).name == "cupy"
    results = []
    for backend in (fm_module.FAST_BACKENDS[0], fm_module.TORCH_BACKEND):
        h = fm_module._ForgetMult.apply(f, z, h0, backend)
        grads = torch.autograd.grad(h.square().sum(), (f, z, h0))
        results.append((h, *grads))
    assert not fm_module.FAST_BACKENDS[0].failed
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert fm(f, z, h0).shape == f.shape


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_steps(tiny_corpus, tmp_path, precision):
    assert cuda_run(tiny_corpus, tmp_path / "run", "--nEpoch", "2", "--precision",
                    precision) == 0
    logs = json.loads((tmp_path / "run" / ckpt.LOGS_FILE).read_text())
    assert logs["loss_train"][-1] < logs["loss_train"][0]


def test_a_stopped_run_resumes_on_cuda(tiny_corpus, tmp_path, monkeypatch):
    from tests.train.test_faults import StopAfter
    flags = ["--nEpoch", "2", "--save_step", "1", "--deterministic"]
    assert cuda_run(tiny_corpus, tmp_path / "straight", *flags) == 0
    StopAfter.checks_before_stop = 70  # inside epoch 1
    monkeypatch.setattr(train, "StopRequest", StopAfter)
    assert cuda_run(tiny_corpus, tmp_path / "stopped", *flags) == 0
    assert ckpt.list_interrupted(tmp_path / "stopped")
    monkeypatch.undo()
    assert cuda_run(tiny_corpus, tmp_path / "stopped", *flags) == 0
    a = ckpt.load_checkpoint(tmp_path / "straight" / "checkpoint_1.pt")["gEncoder"]
    b = ckpt.load_checkpoint(tmp_path / "stopped" / "checkpoint_1.pt")["gEncoder"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_at_most_one_synchronisation_per_logging_step(tiny_corpus, tmp_path, monkeypatch):
    """torch.cuda.set_sync_debug_mode warns at every operation that makes the host wait for
    the GPU; between updates there is one such warning at each logging step, none elsewhere
    (after the first logging interval, where cuDNN autotunes)."""
    marks: list[int] = []
    caught: list = []
    original = optim.Updater.step

    def step(self, *args, **kwargs):
        norms = original(self, *args, **kwargs)
        marks.append(len(caught))
        return norms
    monkeypatch.setattr(optim.Updater, "step", step)
    logging_step = 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            assert cuda_run(tiny_corpus, tmp_path / "run", "--nEpoch", "1", "--logging_step",
                            str(logging_step)) == 0
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [later - earlier for earlier, later in zip(marks, marks[1:])]
    # syncs[k]: between update k + 1 and update k + 2
    for k, count in enumerate(syncs[logging_step:], start=logging_step + 1):
        assert count <= (1 if k % logging_step == 0 else 0), (k, count, [
            str(w.message)[:120] for w in caught[marks[k - 1]:marks[k]]])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for NCCL")
def test_two_ranks_on_nccl(tiny_corpus, tmp_path):
    from tests.train.test_distributed import run_torchrun
    small = [a for a in ON_CUDA]
    argv = [str(a) for a in corpus_args(tiny_corpus) + small +
            ["--nEpoch", "1", "--pathCheckpoint", tmp_path / "run"]]
    result = run_torchrun(argv, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "run")] == [0]
