"""Install the `cpc` package: CPC / CPC-CTC / PASE self-supervised speech representation learning."""
from setuptools import find_packages, setup

setup(
    name="cpc-speech",
    version="0.1.0",
    description="CPC, CPC-CTC and PASE self-supervised speech representation learning",
    packages=find_packages(include=["cpc", "cpc.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile (`torch==2.13.0`) before this package is installed, so that
    # pip never resolves a bare `torch` (which would pull several GB of CUDA packages).
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "soundfile",
        "tqdm",
        "tensorboard",
        "pyyaml",
        "matplotlib",
        "espeakng-loader",
    ],
    # cuda: the QRNN's CUDA kernel (cpc/qrnn/forget_mult.py); without it torch ops run it
    extras_require={"test": ["pytest"], "cuda": ["cupy-cuda12x"]},
    entry_points={
        "console_scripts": [
            "cpc-make-corpus=cpc.corpora.synthetic:main",
        ],
    },
)
