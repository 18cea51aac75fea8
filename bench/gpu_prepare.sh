#!/usr/bin/env bash
# Prepare bench/gpu_check.sh for a GPU machine that reaches no package index: run this here
# (where pip reaches PyPI), then carry .whl and .gpu with the working tree.
#   .whl/          wheels the GPU image lacks, for its Python 3.12: soundfile (audio I/O),
#                  espeakng-loader (the built-in corpus), progressbar2 (CPC_audio), their needs
#   .gpu/CPC_audio facebookresearch/CPC_audio for the comparison, cloned from CPC_AUDIO_SRC
#                  (a clone of it, or its git directory)
# Both folders are ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl .gpu
for package in soundfile==0.13.1 cffi==1.17.1 pycparser==2.22 espeakng-loader==0.2.4 \
               progressbar2==4.5.0 python-utils==3.9.1; do
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .whl "$package"
done
if [ ! -d .gpu/CPC_audio ]; then
    : "${CPC_AUDIO_SRC:?set CPC_AUDIO_SRC to a clone of facebookresearch/CPC_audio}"
    git clone --quiet --depth 1 "file://$(cd "$CPC_AUDIO_SRC" && pwd)" .gpu/CPC_audio
    rm -rf .gpu/CPC_audio/.git
fi
du -sh .whl .gpu
