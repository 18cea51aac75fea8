"""torchrun with 2 CPU processes (gloo): rank 0 alone writes the same files as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpc.utils import checkpoint as ckpt
from tests.train.test_train import SMALL, corpus_args

REPO = Path(__file__).resolve().parents[2]


def run_torchrun(argv: list[str], n_processes: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n_processes}", str(REPO / "cpc" / "train.py"), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_ranks_write_the_files_of_a_single_process_run(tiny_corpus, tmp_path):
    argv = [str(a) for a in corpus_args(tiny_corpus) + SMALL + ["--nEpoch", "2",
                                                                "--save_step", "1"]]
    single = run_torchrun(argv + ["--pathCheckpoint", str(tmp_path / "one")], 1)
    double = run_torchrun(argv + ["--pathCheckpoint", str(tmp_path / "two")], 2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    names = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    assert names(tmp_path / "two") == names(tmp_path / "one")
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "two")] == [0, 1]
    logs = json.loads((tmp_path / "two" / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1] and len(logs["locLoss_train"][0]) == 3
    assert double.stdout.count("train: ") == 1  # only rank 0 reports
    # each rank took half of the batches: the epoch saw (almost) the same windows
    one = json.loads((tmp_path / "one" / "checkpoint_logs.json").read_text())
    assert abs(logs["loss_train"][0] - one["loss_train"][0]) < 0.5


def fixed_negatives(batch_size, seq_len, window, n_negatives, group_size=0, generator=None,
                    device=None, min_shift=1):
    """Negatives that depend only on the anchor (same item, fixed shifts): the same in one
    process and across ranks, so gradients can be compared exactly."""
    import torch
    items = torch.arange(batch_size, device=device)[:, None, None]
    times = (torch.arange(window, device=device)[None, :, None] + 1 +
             torch.arange(n_negatives, device=device)[None, None, :]) % seq_len
    return (items * seq_len + times).expand(batch_size, window, n_negatives)


def first_step_gradients(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    """One DDP step on this rank's half of a fixed global batch (or the whole of it alone)."""
    import cpc.criterion.cpc as cpc_criterion

    original = cpc_criterion.sample_negative_indices
    cpc_criterion.sample_negative_indices = fixed_negatives
    try:
        _one_step(rank, world_size, init_file, out_file)
    finally:
        cpc_criterion.sample_negative_indices = original


def _one_step(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch
    import torch.distributed as dist

    from cpc.criterion.registry import build_criterion
    from cpc.data.batch import Batch
    from cpc.model import build_model
    from cpc.criterion.objective import CriterionObjective
    from cpc.trainer import StepModule
    from cpc.options import build_parser
    from cpc.utils.distributed import shutdown_distributed

    torch.set_num_threads(1)
    args = build_parser().parse_args(["--pathDB", "x"] + [str(a) for a in SMALL])
    torch.manual_seed(0)
    model = build_model(args)
    criterion = build_criterion("cpc", args, dim_context=model.dim_context,
                                dim_encoded=model.dim_encoded)
    step = StepModule(model, CriterionObjective(criterion))
    audio = torch.randn(8, 1, 3200, generator=torch.Generator().manual_seed(1))
    share = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world_size)
        step = torch.nn.parallel.DistributedDataParallel(step)
    batch = Batch(audio[share], torch.zeros(len(audio[share]), dtype=torch.long), None,
                  torch.zeros(1), torch.zeros(1))
    step(batch).loss.backward()
    if rank == 0:
        module = step.module if world_size > 1 else step
        torch.save({name: p.grad.clone() for name, p in module.named_parameters()}, out_file)
    if world_size > 1:
        del step
        shutdown_distributed()


def test_first_step_gradients_equal_one_process_on_the_global_batch(tmp_path):
    import torch
    import torch.multiprocessing as mp
    first_step_gradients(0, 1, "", str(tmp_path / "one.pt"))
    mp.spawn(first_step_gradients, args=(2, str(tmp_path / "init"), str(tmp_path / "two.pt")),
             nprocs=2, join=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [
    ["--CPCCTC", "--CPCCTCNumMatched", "5", "--CPCCTCSelfLoop", "--update_freq", "2"],
    # batches of 32: one validation batch, which two ranks cannot share (logged as NaN)
    ["--config", str(REPO / "configs" / "pase.yaml"), "--sizeWindow", "4800",
     "--pase_stats_batches", "2", "--batchSizeGPU", "32"],
    # the context network gets no gradient: DDP must be told
    ["--supervised", "--cpc_mode", "none", "--onEncoder", "--samplingType", "uniform"],
], ids=["cpcctc", "pase_workers", "supervised_on_encoder"])
def test_every_training_mode_runs_on_two_ranks(tiny_corpus, tmp_path, mode):
    small = list(SMALL)
    if "--config" in mode:  # a PASE recipe sets its own learning rates
        del small[small.index("--learningRate"):small.index("--learningRate") + 2]
    argv = [str(a) for a in corpus_args(tiny_corpus) + small +
            ["--nEpoch", "1", "--pathCheckpoint", tmp_path / "run"]] + mode
    result = run_torchrun(argv, 2)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "run")] == [0]
    logs = json.loads((tmp_path / "run" / "checkpoint_logs.json").read_text())
    assert len(logs["health_z_cos_across"]) == 1  # health figures averaged over the ranks
    batch = logs["effective_batch"]
    assert batch["windows"] == batch["per_batch"] * 2 * batch["update_freq"]
    assert f"= {batch['windows']} windows" in result.stdout


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_on_a_stand_in_accelerator_group(rank: int, world_size: int, port: int,
                                          argv: list[str], result_dir: str) -> None:
    """One rank of a run whose default process group, like NCCL, refuses tensors that are not
    on the device it serves (here the stand-in ``fakegpu``); training itself runs on the CPU."""
    import torch

    from tests import fake_accelerator
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    fake_accelerator.install_device()
    fake_accelerator.refuse_foreign_devices()
    import cpc.utils.distributed as distributed
    distributed.collective_device = lambda backend, device: torch.device(
        fake_accelerator.DEVICE_TYPE)  # the device the default group serves
    from cpc import train
    try:
        code = train.main(argv)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        code = f"{type(exc).__name__}: {exc}"
    Path(result_dir, f"rank{rank}").write_text(str(code))


def test_collectives_run_on_the_device_their_group_serves(tiny_corpus, tmp_path):
    """Under NCCL every collective of the default group must be on the GPU it serves: the epoch
    totals, health figures, stop votes and a SIGTERM's checkpoint must not hand it CPU tensors."""
    import torch.multiprocessing as mp
    argv = [str(a) for a in corpus_args(tiny_corpus) + SMALL +
            ["--nEpoch", "2", "--save_step", "1", "--logging_step", "3",
             "--pathCheckpoint", tmp_path / "run"]]
    mp.spawn(train_on_a_stand_in_accelerator_group,
             args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == ["0", "0"]
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "run")] == [0, 1]
    logs = json.loads((tmp_path / "run" / "checkpoint_logs.json").read_text())
    assert len(logs["loss_train"]) == 2 and len(logs["health_steps"]) > 0


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (torchrun's workers have their own
    sessions), the way a cluster kills a job."""
    import signal
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_ranks_resume_a_killed_run_exactly_and_only_with_two_ranks(tiny_corpus, tmp_path):
    """A step checkpoint of a 2-rank run holds both ranks' random states: the same command
    resumes it exactly after a SIGKILL of the whole job; one process is refused, since the
    ranks' file shares would change."""
    from tests.train.test_faults import assert_same_run, read_until
    argv = [str(a) for a in corpus_args(tiny_corpus) + SMALL +
            ["--nEpoch", "1", "--deterministic"]]
    assert run_torchrun(argv + ["--pathCheckpoint", str(tmp_path / "straight")], 2) \
        .returncode == 0
    killed = argv + ["--pathCheckpoint", str(tmp_path / "killed"), "--save_interval_steps", "4"]
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(REPO / "cpc" / "train.py"), *killed],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    lines = read_until(job, "step checkpoint: epoch 0", 2)
    kill_tree(job.pid)
    job.wait()
    state = ckpt.load_checkpoint(ckpt.list_interrupted(tmp_path / "killed")[0][1])
    assert f"after {state['interrupted']['batches_done']} batches" in lines[-1]
    assert state["interrupted"]["world_size"] == 2 and len(state["interrupted"]["rngs"]) == 2
    alone = subprocess.run([sys.executable, str(REPO / "cpc" / "train.py"), *killed],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2, alone.stdout[-3000:]
    assert "by 2 process(es)" in alone.stderr and "--nproc_per_node 2" in alone.stderr
    resumed = run_torchrun(killed, 2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    assert_same_run(tmp_path / "straight", tmp_path / "killed", 0)
    # a finished epoch resumes under any number of processes: the change is logged
    from cpc import train
    one_more_epoch = list(killed)
    one_more_epoch[one_more_epoch.index("--nEpoch") + 1] = "2"
    assert train.main(one_more_epoch) == 0
    logs = json.loads((tmp_path / "killed" / ckpt.LOGS_FILE).read_text())
    assert {"epoch": 1, "flag": "processes", "was": 2, "now": 1} in logs["option_changes"]


def test_shutdown_frees_a_ddp_module_left_in_its_reference_cycle(tmp_path):
    """A DDP module can outlive its last name in a reference cycle, holding the group's
    threads; left to the interpreter's exit, they abort the process now and then (SIGABRT)."""
    import gc
    import weakref

    import torch
    import torch.distributed as dist

    from cpc.utils.distributed import shutdown_distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        module = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
        module(torch.randn(2, 3)).sum().backward()
        alive = weakref.ref(module)
        cycle = [module]
        cycle.append(cycle)  # as DDP's own cycle does (whether it forms depends on the run)
        del module, cycle
        assert alive() is not None
        shutdown_distributed()
    finally:
        if enabled:
            gc.enable()
    assert alive() is None and not dist.is_initialized()


def vote_and_share(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Rank 1 raises a flag at update 5; every rank records the update at which the vote says
    so. Then rank 0 fails inside on_main."""
    import torch.distributed as dist

    from cpc.utils.distributed import DistInfo, FlagVote, PeerFailed, on_main
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    info = DistInfo(rank, world_size, rank, host_group=dist.new_group(backend="gloo"))
    vote = FlagVote(info, n_flags=2, every=4)
    decided = [update for update in range(1, 40)
               if vote.poll([rank == 1 and update >= 5, False])[0]]
    assert on_main(lambda: "listing", info) == "listing"
    try:
        on_main(lambda: 1 / 0, info)
        failure = "none"
    except ZeroDivisionError:
        failure = "raised"
    except PeerFailed:
        failure = "peer"
    Path(out_dir, f"rank{rank}").write_text(f"{decided[:1]} {failure}")
    dist.destroy_process_group()


def test_ranks_agree_on_a_flag_at_the_same_update_and_on_rank_0_failures(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(vote_and_share, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    # raised at update 5, launched in the vote of update 8, read at update 12 on both ranks
    assert (tmp_path / "rank0").read_text() == "[12] raised"
    assert (tmp_path / "rank1").read_text() == "[12] peer"


def test_sigterm_to_torchrun_stops_every_rank_at_one_update_with_one_checkpoint(tiny_corpus,
                                                                                 tmp_path):
    """A cluster's preemption: torchrun passes SIGTERM to its workers, which agree on the
    update to stop at (a vote every 8 updates) and record one checkpoint of the cut epoch."""
    import signal
    import time

    from tests.train.test_faults import read_until
    argv = [str(a) for a in corpus_args(tiny_corpus) + SMALL +
            ["--nEpoch", "200", "--save_step", "1000", "--pathCheckpoint", tmp_path / "run"]]
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(REPO / "cpc" / "train.py"), *argv],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    read_until(job, "epoch   0 |", 1)
    time.sleep(0.5)
    job.send_signal(signal.SIGTERM)
    rest = job.communicate(timeout=120)[0]
    assert "SIGTERM: stopped in epoch" in rest and "rerun the same command" in rest
    (epoch, path), = ckpt.list_interrupted(tmp_path / "run")
    cut = ckpt.load_checkpoint(path)["interrupted"]
    assert cut["world_size"] == 2 and len(cut["rngs"]) == 2 and cut["batches_done"] > 0
