"""Ctrl-C and SIGTERM: every command line ends with one line and status 130, no traceback; a
capture cut short is marked incomplete, and the loader and the plots refuse it.

A command is interrupted at a chosen point, not after a delay: a small driver replaces one
function with a wrapper that sends the signal to its own process after the N-th call, then
runs the command as ``__main__``. The signal handler raises at the next bytecode, so the
interruption lands at the same place on every run.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpc import train
from cpc.capture import plots
from cpc.capture.completeness import MARKER, IncompleteCapture
from cpc.capture.loader import CaptureLoader
from cpc.data.splits import read_split_list
from cpc.utils.cli import command_line_modules
from cpc.utils.files import exclusive_lock
from cpc.utils.signals import INTERRUPTED_STATUS, interruption_line, run_command
from tests.capture.test_capture import capture_flags
from tests.eval.test_eval_bad_input import abx_inputs  # noqa: F401 (a fixture)
from tests.capture.test_plots import write_capture
from tests.train.test_train import SMALL, corpus_args

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_BAR = re.compile(r"^[\w ]+: +\d+%\|")  # tqdm's "features: 100%|###| 8/8 [...]"

DRIVER = """
import importlib, os, runpy, signal, sys
module_name, attribute, count, signal_name, target, *argv = sys.argv[1:]
module = importlib.import_module(module_name)
real, calls = getattr(module, attribute), [0]
def interrupting(*args, **kwargs):
    result = real(*args, **kwargs)
    calls[0] += 1
    if calls[0] == int(count):
        os.kill(os.getpid(), getattr(signal, signal_name))
    return result
setattr(module, attribute, interrupting)
sys.argv = [target, *argv]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def interrupted(after: str, calls: int, signal_name: str, command: list,
                tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``command`` (a script path or a module, then its arguments) and send it
    ``signal_name`` once ``after`` (``module:function``) has returned ``calls`` times."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    module, attribute = after.split(":")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(driver), module, attribute, str(calls),
                           signal_name, *map(str, command)], cwd=ROOT, env=env,
                          capture_output=True, timeout=300)
    # decoded here: text=True would turn a progress bar's \r into a line break
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


def assert_one_interrupt_line(done: subprocess.CompletedProcess, signal_name: str) -> str:
    report = f"rc={done.returncode}\n--- stderr ---\n{done.stderr}\n--- stdout ---\n{done.stdout}"
    assert done.returncode == INTERRUPTED_STATUS, report
    assert "Traceback" not in done.stderr, report
    # what a terminal shows (a progress bar rewrites its line after each \r), less the bars
    lines = [line.split("\r")[-1] for line in done.stderr.split("\n")]
    lines = [line for line in lines if line.strip() and not PROGRESS_BAR.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({signal_name})"), report
    return lines[0]


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """A one-epoch run directory, trained on three files (a few batches)."""
    root = tmp_path_factory.mktemp("interrupts")
    few = root / "few.txt"
    few.write_text("\n".join(read_split_list(tiny_corpus / "train_split.txt")[:3]) + "\n")
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", root / "run", "--nEpoch", "1",
                                               "--pathTrain", few]
    assert train.main([str(a) for a in argv]) == 0
    return root / "run"


# ----------------------------------------------------------------- one mechanism for every CLI

@pytest.mark.parametrize("module", command_line_modules(ROOT / "cpc"))
def test_every_command_line_ends_through_run_command(module):
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    blocks = source.split('\nif __name__ == "__main__":')
    assert re.match(r"\n    (sys\.exit|exit_without_teardown)\(run_command\(main\)\)\n",
                    blocks[-1]), f"{module}: its __main__ block does not call run_command(main)"
    if len(blocks) > 2:  # the early block before the slow imports: Ctrl-C during them too
        assert "\n    handle_interrupts()\n" in blocks[1].split("\n\n")[0], module


def test_run_command_turns_an_interruption_into_one_line(tmp_path, capsys):
    def main() -> int:
        with exclusive_lock(tmp_path / "out", "feature export"):
            raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run_command(main) == 130
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert capsys.readouterr().err == (f"interrupted (SIGINT): {tmp_path / 'out'} (feature "
                                       f"export) was left unfinished; rerun the command to "
                                       f"finish it\n")
    assert not (tmp_path / "out").exists()  # the lock's directory, empty: removed
    assert interruption_line("SIGTERM") == "interrupted (SIGTERM)"  # nothing registered now


def test_sigterm_while_modules_are_imported_is_one_line(tmp_path):
    script = tmp_path / "slow_start.py"
    script.write_text("import os, signal, time\n"
                      "from cpc.utils.signals import handle_interrupts\n"
                      "handle_interrupts()\n"
                      "os.kill(os.getpid(), signal.SIGTERM)\n"
                      "time.sleep(30)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (done.returncode, done.stderr) == (130, "interrupted (SIGTERM)\n")


# ------------------------------------------------------------------------ interrupted commands

def test_ctrl_c_during_only_capture_is_one_line_and_marks_the_capture(trained, tiny_corpus,
                                                                      tmp_path, capsys):
    save = tmp_path / "cap"
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained, "--onlyCapture",
                                       "--device", "cpu"]
    argv += capture_flags(tiny_corpus, save, "--captureEverything")
    done = interrupted("cpc.utils.checkpoint:save_torch", 3, "SIGINT",
                       ["cpc/train.py", *argv], tmp_path)
    line = assert_one_interrupt_line(done, "SIGINT")
    assert line == (f"interrupted (SIGINT): {save / '0'} (capture) was left unfinished; rerun "
                    f"the command to finish it")
    epoch_dir = save / "0"
    assert (epoch_dir / MARKER).is_file() and not (epoch_dir / ".lock").exists()
    assert len(list(epoch_dir.rglob("*.pt"))) == 3
    with pytest.raises(IncompleteCapture, match=f"{epoch_dir} is an incomplete capture"):
        CaptureLoader(save)
    assert plots.main([str(epoch_dir), "--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {epoch_dir} is an incomplete capture") and \
        err.count("\n") == 1 and "--onlyCapture" in err
    assert not (tmp_path / "plots").exists()


def test_sigterm_during_only_classif_metric_is_one_line(trained, tiny_corpus, tmp_path):
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained, "--only_classif_metric",
                                       "--speaker_sep", "--linsep_n_epoch", "1",
                                       "--device", "cpu"]
    done = interrupted("cpc.hooks:run_probes", 1, "SIGTERM", ["cpc/train.py", *argv], tmp_path)
    assert assert_one_interrupt_line(done, "SIGTERM") == "interrupted (SIGTERM)"


def test_ctrl_c_during_abx_is_one_line_and_keeps_the_earlier_scores(abx_inputs, tmp_path):
    out = tmp_path / "abx"
    out.mkdir()
    (out / "ABX_scores.json").write_text('{"within": 0.1}')
    done = interrupted("cpc.eval.abx_core:abx", 1, "SIGINT",
                       ["cpc.eval.ABX", "from_pre_computed", abx_inputs / "onehot",
                        abx_inputs / "many.item", "--out", out, "--file_extension", ".npy"],
                       tmp_path)
    line = assert_one_interrupt_line(done, "SIGINT")
    assert f"{out / 'ABX_scores.json'} (ABX evaluation) was left unfinished" in line
    assert sorted(p.name for p in out.iterdir()) == ["ABX_scores.json"]
    assert (out / "ABX_scores.json").read_text() == '{"within": 0.1}'


# ----------------------------------------------------------------------- captures: complete?

def test_a_capture_folder_without_marker_is_whole_only_with_its_last_file(tmp_path):
    """Captures written before the marker existed: stats.json, always written last, decides."""
    epoch_dir = tmp_path / "cap" / "2"
    write_capture(epoch_dir)
    assert len(list(CaptureLoader(tmp_path / "cap"))) == 2
    (epoch_dir / "stats.json").unlink()
    with pytest.raises(IncompleteCapture, match="it has no stats.json, written last"):
        CaptureLoader(epoch_dir)


def test_a_second_capture_into_a_folder_in_use_is_refused(trained, tiny_corpus, tmp_path,
                                                          capsys):
    save = tmp_path / "cap"
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained, "--onlyCapture",
                                       "--device", "cpu"]
    argv += capture_flags(tiny_corpus, save, "--captureCtxRepr")
    with exclusive_lock(save / "0", "capture"):
        assert train.main([str(a) for a in argv]) == 2
        assert sorted(p.name for p in (save / "0").iterdir()) == [".lock"]
    err = capsys.readouterr().err
    assert err.startswith(f"error: {save / '0'} is in use by process {os.getpid()} on ")
    assert "two captures writing one directory would overwrite each other's files" in err


def test_a_new_capture_replaces_the_files_of_an_older_one(trained, tiny_corpus, tmp_path):
    save = tmp_path / "cap"
    write_capture(save / "0", n_windows=9)  # other kinds, other batches
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", trained, "--onlyCapture",
                                       "--device", "cpu"]
    argv += capture_flags(tiny_corpus, save, "--captureCtxRepr")
    assert train.main([str(a) for a in argv]) == 0
    loader = CaptureLoader(save)
    assert loader.kinds == ["ctx_repr"]
    assert sorted(p.name for p in (save / "0").iterdir()) == \
        ["ctx_repr", "origin", "sequences.json", "stats.json"]
    assert all(isinstance(batch["ctx_repr"], torch.Tensor) and "origin" in batch
               for batch in loader)
