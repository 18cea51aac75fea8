"""Probe cost vs CPC training cost on the same data (the demo corpus).

    python bench/linsep_bench.py [--corpus data/demo_corpus] [--cpc_steps 20]

Prints the one-time feature extraction, the median seconds per probe epoch (speaker, mean-pooled
speaker, frame phone) on cached features, and a CPC training epoch of the default model on the
same windows (median step time x batches per epoch), then their ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cpc.criterion.registry import build_criterion  # noqa: E402
from cpc.data.corpus import build_datasets  # noqa: E402
from cpc.model import build_model  # noqa: E402
from cpc.options import build_parser  # noqa: E402
from cpc.probes.config import ProbeConfig  # noqa: E402
from cpc.probes.features import extract_features  # noqa: E402
from cpc.probes.training import train_probe  # noqa: E402
from cpc.utils.optim import build_optimizer  # noqa: E402
from cpc.corpora.synthetic import generate_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=Path("data/demo_corpus"))
    parser.add_argument("--cpc_steps", type=int, default=20)
    parser.add_argument("--probe_epochs", type=int, default=3)
    args = parser.parse_args()
    generate_corpus(args.corpus, 20, 2, 10, seed=0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads")
    print(f"command: python bench/linsep_bench.py --corpus {args.corpus} "
          f"--cpc_steps {args.cpc_steps} --probe_epochs {args.probe_epochs}")
    c = args.corpus
    data = build_datasets(c, ".flac", str(c / "train_split.txt"), str(c / "val_split.txt"),
                          str(c / "converted_aligned_phones.txt"), 20480,
                          n_process_loader=2)
    cpc_args = build_parser().parse_args(["--pathDB", str(c)])
    torch.manual_seed(0)
    model = build_model(cpc_args)
    criterion = build_criterion("cpc", cpc_args, dim_context=model.dim_context,
                                dim_encoded=model.dim_encoded)
    optimizer, _ = build_optimizer(list(model.parameters()) + list(criterion.parameters()),
                                   2e-4, 0.9, 0.999, 1e-8, None, -1)
    loader = data.train.getDataLoader(8, "samespeaker", randomOffset=True)
    n_batches = len(loader)
    step_times = []
    for i, batch in enumerate(loader):
        if i == args.cpc_steps + 2:
            break
        start = time.perf_counter()
        c_feature, encoded, _ = model(batch.audio, None)
        out = criterion(c_feature, encoded, None)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if i >= 2:
            step_times.append(time.perf_counter() - start)
    cpc_epoch = statistics.median(step_times) * n_batches

    device = torch.device("cpu")
    start = time.perf_counter()
    config = ProbeConfig(n_epochs=args.probe_epochs)
    features = {name: extract_features(model, part, batch_size=8, device=device,
                                       with_frames=True, budget_gb=config.feature_budget_gb)
                for name, part in (("train", data.train), ("val", data.val))}
    extraction = time.perf_counter() - start
    print(f"CPC epoch (default model, {n_batches} batches of 8 x 20480): "
          f"{cpc_epoch:.1f} s (median step {statistics.median(step_times):.3f} s)")
    print(f"feature extraction, once per probe run (train + val): {extraction:.1f} s")
    for probe, n_classes in (("speaker", len(data.speakers)),
                             ("speaker_mean", len(data.speakers)), ("phone", data.n_phones)):
        start = time.perf_counter()
        train_probe(probe, features["train"], features["val"], n_classes=n_classes,
                    config=config, device=device)
        per_epoch = (time.perf_counter() - start) / args.probe_epochs
        print(f"probe {probe:13s}: {per_epoch:6.2f} s per probe epoch = "
              f"{per_epoch / cpc_epoch:.2%} of a CPC epoch")
    data.close()


if __name__ == "__main__":
    main()
