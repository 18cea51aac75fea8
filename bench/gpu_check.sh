#!/usr/bin/env bash
# The GPU check, on one GPU, in at most 8 minutes; prints one table:
#   1. the CUDA test tier (pytest -m cuda: one epoch of CPC, CPC-CTC and PASE+QRNN, cupy
#      against torch QRNN, bf16 and fp16 steps, a resume, one host sync per logging step,
#      NCCL with 2 ranks when 2 GPUs exist);
#   2. bench/train_bench.py, fp32 against bf16 (s/step, s of audio/s, peak GPU memory);
#   3. this project (bf16) against CPC_audio (fp32) on the GPU, the same configuration
#      (bench/compare_cpc_audio.py, CPC with transformer heads, 2 epochs of the demo corpus).
# On a machine without CUDA everything GPU-only is skipped and the script still exits 0.
#
#   bash bench/gpu_check.sh [OUT_DIR]       (logs in OUT_DIR, default $OUT or /tmp/gpu_check)
#
# A GPU machine without a package index needs bench/gpu_prepare.sh's .whl and .gpu carried.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGS=${1:-${OUT:-/tmp/gpu_check}}
CPC_AUDIO=${CPC_AUDIO:-.gpu/CPC_audio}
mkdir -p "$LOGS"
if ! $PY -c "import soundfile, espeakng_loader" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site .whl/*.whl && export PYTHONPATH=/tmp/gpu_check_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$SECONDS
cuda=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
$PY -c "import torch; print('torch', torch.__version__ + ',', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" | tee "$LOGS/machine.txt"

$PY -m pytest -q -m cuda -p no:cacheprovider tests/train/test_cuda.py 2>&1 | tee "$LOGS/cuda_tests.log"
tests_status=${PIPESTATUS[0]}

$PY bench/train_bench.py --device cuda --precision fp32 bf16 --steps 20 2>&1 \
    | tee "$LOGS/train_bench.log"

if [ "$cuda" = 1 ] && [ -d "$CPC_AUDIO" ]; then
    [ -f data/demo_corpus/train_split.txt ] || \
        $PY -m cpc.corpora.synthetic data/demo_corpus --speakers 20 --chapters 2 --utterances 10
    $PY bench/compare_cpc_audio.py --device cuda --precision bf16 --cpc_audio "$CPC_AUDIO" \
        --files 360 --epochs 2 --only cpc_transformer 2>&1 | tee "$LOGS/compare.log"
else
    echo "comparison skipped: needs CUDA and a CPC_audio checkout in $CPC_AUDIO" \
        | tee "$LOGS/compare.log"
fi

$PY - "$LOGS" "$((SECONDS - start))" <<'PYTHON'
import re, sys
from pathlib import Path
logs, seconds = Path(sys.argv[1]), sys.argv[2]
read = lambda name: (logs / name).read_text() if (logs / name).exists() else ""
tests = read("cuda_tests.log").strip().splitlines()
rows = [("machine", read("machine.txt").strip()),
        ("CUDA tests (pytest -m cuda)", tests[-1] if tests else "not run")]
for line in read("train_bench.log").splitlines():
    match = re.match(r"(.+?) (fp32|bf16|fp16): +([\d.]+) s audio/s \| step +([\d.]+) ms.*"
                     r"peak GPU memory ([\d.]+) GB", line)
    if match:
        name, precision, audio, step, memory = match.groups()
        rows.append((f"train_bench {name.strip()} {precision}",
                     f"{float(step) / 1000:.4f} s/step, {audio} s of audio/s, {memory} GB"))
rows += [(f"train_bench", line) for line in read("train_bench.log").splitlines()
         if "no CUDA" in line]
for line in read("compare.log").splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if "skipped" in line:
        rows.append(("vs CPC_audio", line))
    elif cells[0] == "cpc_transformer" and cells[1] == "ratio":
        rows.append(("vs CPC_audio: ratio", f"{cells[2]}; {cells[5]}; {cells[7]}"))
    elif cells[0] == "cpc_transformer" and len(cells) == 10:
        rows.append((f"vs CPC_audio: {cells[1]}",
                     f"{cells[2]} s wall, {cells[6]} s last epoch = {cells[7]} s of audio/s, "
                     f"{cells[8]} GB RSS, exit {cells[9]}"))
rows.append(("wall time of this check", f"{seconds} s"))
print("\n| check | result |\n|---|---|")
for name, value in rows:
    print(f"| {name} | {value} |")
PYTHON
exit "$tests_status"
