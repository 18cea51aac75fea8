"""The epoch loop on its own: a fake objective, a fake loader and a fake hook that records what
the loop tells it, so that the Hook contract and the learning rate's single owner are checked
without a corpus, a model of the zoo or a subprocess."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cpc.criterion.base import CriterionOutput
from cpc.criterion.objective import Objective, RateGroup
from cpc.data.batch import Batch
from cpc.run_log import TensorBoard, empty_logs
from cpc.trainer import (EpochEnd, EpochProgress, Hook, NonFiniteWatch, Resumption, Run,
                         Trainer, TrainedState, StepModule)
from cpc.utils.distributed import DistInfo
from cpc.utils.optim import Updater, build_adam
from cpc.utils.signals import StopRequest

N_BATCHES = 4


class TinyModel(nn.Module):
    """The model interface the loop needs: gEncoder, gAR, ``(audio, label) -> (c, z, _)`` and
    the ``model_args`` a checkpoint saves."""

    def __init__(self) -> None:
        super().__init__()
        self.gEncoder = nn.Linear(8, 3)
        self.gAR = nn.Linear(3, 3)
        self.model_args = {"hiddenEncoder": 3, "hiddenGar": 3}

    def forward(self, audio: torch.Tensor, label: torch.Tensor | None):
        encoded = self.gEncoder(audio.reshape(len(audio), 1, 8))
        return self.gAR(encoded), encoded, label


class SquaredObjective(Objective):
    """Mean square of the context plus a learned offset; fails on demand at one call."""

    state_key = "squared"

    def __init__(self, fail_at: int | None = None) -> None:
        self.module = nn.Linear(3, 1)
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, batch: Batch, c_feature: torch.Tensor,
                 encoded: torch.Tensor) -> CriterionOutput:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("objective failed")
        loss = self.module(c_feature).pow(2).mean()
        return CriterionOutput(loss, loss.detach().reshape(1), torch.ones(1))

    def rate_groups(self, model: nn.Module) -> dict[str, RateGroup]:
        return {"model": RateGroup(list(model.parameters()) + list(self.module.parameters()),
                                   0.1, lambda epoch: 0.5 ** epoch)}

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        return {"squared": list(self.module.parameters())}


class ListLoader:
    """The loader interface the loop needs, over a fixed list of batches."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches, self.skip, self.limit = batches, 0, None

    def set_epoch(self, epoch: int, generation: int = 0) -> None:
        self.skip, self.limit = 0, None

    def local_length(self) -> int:
        return len(self.batches)

    def plan_digest(self) -> str:
        return "fixed"

    def files_of_batches(self, indices: list[int]) -> list[str]:
        return [f"file{i}.wav" for i in indices]

    def __len__(self) -> int:
        return len(self.batches) if self.limit is None else min(self.limit, len(self.batches))

    def __iter__(self):
        return iter(self.batches[self.skip:len(self)])


class RecordingHook(Hook):
    """Writes down every call of the contract, in order."""

    name = "recorder"

    def __init__(self, stop_after: int | None = None, fail_on_stop: bool = False,
                 replace: bool = False) -> None:
        self.calls: list[str] = []
        self.loaded: dict | None = None
        self.stop_after, self.fail_on_stop, self.replace = stop_after, fail_on_stop, replace
        self.steps = 0
        self.progress: EpochProgress | None = None
        self.seen_exception: BaseException | None = None

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state
        self.calls.append("load")

    def on_train_step(self, run: Run, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        self.steps += 1
        self.calls.append(f"step{run.global_step}")

    def sync_values(self, run: Run) -> dict[str, torch.Tensor]:
        return {"steps": torch.tensor(float(self.steps))}

    def on_sync(self, run: Run, values: dict[str, float]) -> None:
        self.calls.append(f"sync{values['steps']:.0f}")

    def after_train(self, run, stats) -> None:
        self.calls.append(f"after_train{run.epoch}")

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        self.calls.append(f"end{end.epoch}:lr{end.lr:g}")

    def stop_reason(self) -> str | None:
        return "test stop" if self.stop_after is not None and self.steps >= self.stop_after \
            else None

    def on_stop(self, run: Run, progress: EpochProgress) -> None:
        self.progress = progress
        self.calls.append(f"stop{progress.batches_done}")
        if self.fail_on_stop:
            raise RuntimeError("hook failed on stop")

    def on_exception(self, run: Run, exc: BaseException) -> BaseException | None:
        self.seen_exception = exc
        self.calls.append("exception")
        return ValueError(f"told: {exc}") if self.replace else None


def make_trainer(hooks: list[Hook], objective: Objective | None = None,
                 logging_step: int = 2) -> Trainer:
    torch.manual_seed(0)
    model, objective = TinyModel(), objective or SquaredObjective()
    group = objective.rate_groups(model)["model"]
    optimizer, rate = build_adam(group.params, group.lr, betas=(0.9, 0.999), eps=1e-8,
                                 schedule=group.schedule)
    training = TrainedState(model, objective, {"model": optimizer}, {"model": rate})
    batches = [Batch(torch.randn(2, 1, 8), torch.zeros(2, dtype=torch.long), None,
                     torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
               for _ in range(N_BATCHES)]
    run = Run(training, None, empty_logs(), board=TensorBoard(None), info=DistInfo(),
              run_dir=None)
    updater = Updater(training.optimizers, training.rates, training.parameter_parts())
    device = torch.device("cpu")
    return Trainer(run, StepModule(model, objective), updater, train_loader=ListLoader(batches),
                   val_loader=ListLoader(batches[:2]), device=device, hooks=hooks,
                   nonfinite=NonFiniteWatch(0, device), logging_step=logging_step,
                   signals=StopRequest())


def test_a_hook_sees_the_contract_in_order_and_the_rate_follows_its_schedule():
    hook = RecordingHook()
    logs = make_trainer([hook]).fit(2, Resumption())
    per_epoch = lambda e, first: [f"step{first}", f"step{first + 1}", f"sync{first + 1}",  # noqa
                                  f"step{first + 2}", f"step{first + 3}", f"sync{first + 3}",
                                  f"sync{first + 3}", f"after_train{e}"]
    assert hook.calls == per_epoch(0, 1) + ["end0:lr0.1"] + per_epoch(1, 5) + ["end1:lr0.05"]
    assert logs["epoch"] == [0, 1] and len(logs["loss_val"]) == 2


def test_hook_states_are_saved_with_the_run_and_restored_before_the_first_epoch():
    hook = RecordingHook()
    trainer = make_trainer([hook])
    trainer.fit(1, Resumption())
    state = trainer.run.state(0)
    assert state["hooks"] == {"recorder": {"steps": N_BATCHES}}
    assert state["squared"].keys() == trainer.run.training.objective.module.state_dict().keys()
    assert state["model_args"] == {"hiddenEncoder": 3, "hiddenGar": 3}
    resumed = RecordingHook()
    make_trainer([resumed]).fit(2, Resumption(1, None, N_BATCHES, state["hooks"]))
    assert resumed.loaded == {"steps": N_BATCHES} and resumed.calls[0] == "load"


def test_a_stop_gives_every_hook_the_progress_then_raises_the_first_hook_error():
    stopper, failing, last = RecordingHook(stop_after=3), RecordingHook(fail_on_stop=True), \
        RecordingHook()
    trainer = make_trainer([stopper, failing, last])
    with pytest.raises(RuntimeError, match="hook failed on stop"):
        trainer.fit(2, Resumption())
    for hook in (stopper, failing, last):  # every on_stop ran, the failing one included
        assert hook.progress is not None and hook.progress.batches_done == 3
        assert hook.progress.reason == "test stop" and hook.progress.epoch == 0
    assert "end0:lr0.1" not in stopper.calls  # the epoch did not end


def test_an_error_of_the_loop_goes_through_on_exception_and_may_be_replaced():
    plain, replacing = RecordingHook(), RecordingHook(replace=True)
    with pytest.raises(ValueError, match="told: objective failed"):
        make_trainer([plain, replacing], SquaredObjective(fail_at=3)).fit(1, Resumption())
    assert isinstance(plain.seen_exception, RuntimeError)
    assert plain.calls[-1] == "exception" and replacing.calls[-1] == "exception"
    with pytest.raises(RuntimeError, match="objective failed"):  # no replacement: raised as is
        make_trainer([RecordingHook()], SquaredObjective(fail_at=3)).fit(1, Resumption())


def test_the_learning_rate_has_one_formula_of_step_and_epoch():
    from cpc.utils.optim import LearningRate
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    rate = LearningRate(optimizer, 0.2, lambda epoch: 0.5 ** epoch, warmup_steps=4)
    assert rate.lr_at(0, 0) == pytest.approx(0.05) and rate.lr_at(3, 0) == pytest.approx(0.2)
    assert rate.lr_at(10, 2) == pytest.approx(0.05)
    rate.scale(0.5)  # a rollback: the base and the optimiser's rate now
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    rate.set_epoch(1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0125) and rate.scheduled() == \
        pytest.approx(0.05)
    restored = LearningRate(torch.optim.Adam([param], lr=1.0), 0.2, lambda epoch: 1.0)
    restored.load_state_dict(rate.state_dict())
    assert restored.base == pytest.approx(0.1)
    restored.load_state_dict({"base_lrs": [0.3], "last_epoch": 4, "_step_count": 5})  # LambdaLR's
    assert restored.base == pytest.approx(0.3)
