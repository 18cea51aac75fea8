"""bench/compare_cpc_audio.py's CPU runner and torchaudio stand-in, without a CPC_audio checkout
(the comparison itself is a benchmark, run by hand)."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("compare_cpc_audio",
                                                  ROOT / "bench" / "compare_cpc_audio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_runner_runs_a_cuda_only_script_on_cpu_with_torchaudio_from_soundfile(tmp_path):
    bench = load_bench()
    (tmp_path / "shim" / "torchaudio").mkdir(parents=True)
    (tmp_path / "shim" / "torchaudio" / "__init__.py").write_text(bench.TORCHAUDIO_SHIM)
    (tmp_path / "shim" / "run_on_cpu.py").write_text(bench.RUNNER)
    audio = (np.arange(3200) % 100 / 100 - 0.5).astype(np.float32)
    sf.write(tmp_path / "a.flac", audio, 16000, subtype="PCM_16")
    script = tmp_path / "pkg" / "train.py"
    script.parent.mkdir()
    script.write_text(
        "import sys, torch, torchaudio\n"
        "assert torch.cuda.device_count() == 1\n"
        "model = torch.nn.Linear(2, 2).cuda()\n"
        "x = torch.ones(1, 2).cuda()\n"
        "info = torchaudio.info(sys.argv[1])[0]\n"
        "wave, rate = torchaudio.load(sys.argv[1])\n"
        "print(model(x).shape[1], info.length, rate, tuple(wave.shape))\n")
    out = subprocess.run([sys.executable, str(tmp_path / "shim" / "run_on_cpu.py"), str(script),
                          str(tmp_path / "a.flac")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "shim")}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "3200", "16000", "(1,", "3200)"]


def test_our_steps_and_windows_are_read_from_the_training_log():
    bench = load_bench()
    log = ("epoch 0 train:   0%|          | 0/36 [00:00<?, ?it/s]\n"
           "epoch   0 | train loss 58.3 acc 0.009 | val loss 58.3 acc 0.010 | 20.0 s, 12.8 s audio/s\n"
           "epoch 1 train:   0%|          | 0/35 [00:00<?, ?it/s]\n"
           "epoch   1 | train loss 57.1 acc 0.010 | val loss 57.0 acc 0.011 | 10.0 s, 12.8 s audio/s\n")
    assert bench.our_steps_and_windows(log) == (71, 300)  # 384 s of 1.28 s windows


def test_cpc_audio_windows_follow_its_same_speaker_sampler(tmp_path):
    """Per speaker n // sizeWindow - 1 windows (its offset is > 0), in batches of at most 8."""
    bench = load_bench()
    lengths = {"s1": [3 * bench.WINDOW + 5, 7 * bench.WINDOW], "s2": [bench.WINDOW + 1], "s3": [100]}
    stems = []
    for speaker, files in lengths.items():
        folder = tmp_path / speaker / "1"
        folder.mkdir(parents=True)
        for index, n in enumerate(files):
            stem = f"{speaker}-1-{index}"
            sf.write(folder / f"{stem}.flac", np.zeros(n, dtype=np.float32), bench.SAMPLE_RATE)
            stems.append(stem)
    (tmp_path / "train.txt").write_text("\n".join(stems[:-1]) + "\n")  # s3 is not in the split
    # s1: 10 windows - 1 = 9 (batches of 8 and 1); s2: 1 - 1 = 0
    assert bench.cpc_audio_steps_and_windows(tmp_path, tmp_path / "train.txt") == (2, 9)


def test_repeats_are_summarised_by_medians_and_the_worst_exit_code():
    bench = load_bench()
    runs = [{"code": 0, "wall_s": 30.0, "peak_gb": 1.0, "steps": 36, "windows": 199, "audio_per_s": 8.0},
            {"code": 1, "wall_s": 34.0, "peak_gb": 1.2, "steps": 36, "windows": 200, "audio_per_s": 7.0},
            {"code": 0, "wall_s": 31.0, "peak_gb": 1.1, "steps": 36, "windows": 198, "audio_per_s": 7.5}]
    assert bench.median_row(runs) == {"code": 1, "wall_s": 31.0, "peak_gb": 1.1, "steps": 36,
                                      "windows": 199, "audio_per_s": 7.5}


def test_the_last_epochs_time_is_read_from_both_systems_logs(tmp_path):
    bench = load_bench()
    log = ("Starting epoch 0\nRan 1 epochs in 31.50 seconds\nStarting epoch 1\n"
           "Ran 2 epochs in 52.25 seconds\n")
    assert bench.cpc_audio_last_epoch_seconds(log) == 20.75
    assert math.isnan(bench.cpc_audio_last_epoch_seconds("crashed before its first epoch"))
    (tmp_path / "checkpoint_logs.json").write_text('{"epoch_seconds": [9.5, 7.25]}')
    assert bench.our_last_epoch_seconds(tmp_path) == 7.25
