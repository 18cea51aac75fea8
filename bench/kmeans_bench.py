"""k-means speed, memory and quality: cpc.units.kmeans vs faiss.Kmeans vs sklearn MiniBatchKMeans.

    python bench/kmeans_bench.py [--frames 1000000] [--dim 256] [--ks 50 100 500] [--iters 20] \
        [--threads 2] [--device cpu] [--methods torch faiss sklearn] [--workdir /tmp/kmeans_bench]
    python bench/kmeans_bench.py --checkpoint runs/demo/checkpoint_2.pt --pathDB data/demo_corpus

Features: a seeded Gaussian mixture (``--components`` centres spread with standard deviation 4
around 0, unit noise), or with --checkpoint the contexts of the audio files under --pathDB.
They are written once to ``--workdir`` as .npy; every (method, k) then runs in a fresh
subprocess that reads them, so that its peak resident memory (``ru_maxrss``, which counts the
pages of the feature file it touched) is its own. Every method gets the same features, seed,
iteration budget (Lloyd iterations; epochs for MiniBatchKMeans) and thread count; faiss is
told to use every frame (no subsampling). Inertia (sum of squared distances to the nearest
centroid, float64) is computed afterwards by one function on the same features for all.
A method whose package is absent is skipped with a line. Prints machine and command line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

METHODS = ("torch", "faiss", "sklearn")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="synthetic frames")
    parser.add_argument("--dim", type=int, default=256, help="synthetic dimension")
    parser.add_argument("--components", type=int, default=200, help="synthetic mixture centres")
    parser.add_argument("--checkpoint", default=None, help="cluster this checkpoint's features")
    parser.add_argument("--pathDB", default=None, help="audio of --checkpoint's features")
    parser.add_argument("--extension", default=".flac", help="audio extension under --pathDB")
    parser.add_argument("--ks", type=int, nargs="+", default=[50, 100, 500], help="cluster counts")
    parser.add_argument("--iters", type=int, default=20, help="Lloyd iterations (epochs)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="implementations to run")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per method")
    parser.add_argument("--device", default="cpu", help="device of the torch k-means")
    parser.add_argument("--batch_size", type=int, default=8192,
                        help="frames per mini-batch (torch k-means and MiniBatchKMeans)")
    parser.add_argument("--block_frames", type=int, default=None,
                        help="frames the torch k-means reads from the feature file at once "
                             "(default: what cpc.units.cluster's default --max_size_loaded, "
                             "4 GB, holds; all of them here, so they stay in memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of each method")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each (method, k), alternated; the median wall time is shown")
    parser.add_argument("--workdir", default="/tmp/kmeans_bench", help="features and centroids")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "K"), default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--features_file", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------- features

def synthetic_features(path: Path, frames: int, dim: int, components: int, seed: int) -> None:
    """A Gaussian mixture written in chunks (never the whole array in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (components, dim)).astype(np.float32)
    array = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                      shape=(frames, dim))
    for start in range(0, frames, 100_000):
        n = min(100_000, frames - start)
        array[start:start + n] = centres[rng.integers(components, size=n)] + \
            rng.normal(0, 1, (n, dim)).astype(np.float32)
    array.flush()
    del array
    os.replace(path.with_suffix(".tmp.npy"), path)


def checkpoint_features(path: Path, checkpoint: str, path_db: str, extension: str) -> None:
    """Contexts of every audio file under ``path_db`` (what ``cpc.units.cluster`` clusters)."""
    from cpc.eval.build_zeroSpeech_features import list_files_by_stem
    from cpc.units.features import build_feature_maker, cache_features

    files = list(list_files_by_stem(path_db, extension).items())
    maker = build_feature_maker("checkpoint", checkpoint)
    cache = cache_features(maker, files, path.with_suffix(".f32"), chunk_samples=10240,
                           buffer_bytes=1 << 28, device=torch.device("cpu"))
    np.save(path, np.asarray(cache.frames()))
    path.with_suffix(".f32").unlink()


def features_path(args: argparse.Namespace) -> Path:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        name = f"ckpt_{Path(args.checkpoint).stem}_{Path(args.pathDB).name}.npy"
        path = workdir / name
        if not path.exists():
            checkpoint_features(path, args.checkpoint, args.pathDB, args.extension)
    else:
        path = workdir / f"mixture_{args.frames}x{args.dim}_c{args.components}_s{args.seed}.npy"
        if not path.exists():
            synthetic_features(path, args.frames, args.dim, args.components, args.seed)
    return path


def inertia(features: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> float:
    """Sum over frames of the squared distance to the nearest centroid, in float64."""
    c = torch.from_numpy(centroids).double()
    c_sq = (c * c).sum(dim=1)
    total = 0.0
    for start in range(0, features.shape[0], chunk):
        x = torch.from_numpy(np.array(features[start:start + chunk], dtype=np.float64))
        d = (x * x).sum(dim=1, keepdim=True) - 2 * x @ c.T + c_sq
        total += float(d.min(dim=1).values.clamp_min(0).sum())
    return total


# --------------------------------------------------------------------------------- worker

def fit_torch(features: np.ndarray, k: int, args: argparse.Namespace) -> np.ndarray:
    from cpc.units.kmeans import ArrayFrames, KMeansConfig, fit
    config = KMeansConfig(k, max_iter=args.iters, tol=0.0, seed=args.seed,
                          batch_size=args.batch_size,
                          block_frames=args.block_frames or 4_000_000_000 // (4 * features.shape[1]),
                          device=args.device, progress=False)
    return fit(ArrayFrames(features), config).centroids.numpy()


def fit_faiss(features: np.ndarray, k: int, args: argparse.Namespace) -> np.ndarray:
    import faiss
    faiss.omp_set_num_threads(args.threads)
    data = np.ascontiguousarray(features, dtype=np.float32)
    model = faiss.Kmeans(data.shape[1], k, niter=args.iters, seed=args.seed, verbose=False,
                         max_points_per_centroid=data.shape[0] // k + 1)
    model.train(data)
    return model.centroids


def fit_sklearn(features: np.ndarray, k: int, args: argparse.Namespace) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans
    model = MiniBatchKMeans(n_clusters=k, batch_size=args.batch_size, max_iter=args.iters,
                            n_init=1, random_state=args.seed, compute_labels=False)
    model.fit(np.asarray(features))
    return model.cluster_centers_.astype(np.float32)


def worker(args: argparse.Namespace) -> None:
    """Fit one method in this process; print wall time and peak RSS as JSON."""
    method, k = args.worker[0], int(args.worker[1])
    torch.set_num_threads(args.threads)
    features = np.load(args.features_file, mmap_mode="r")
    start = time.perf_counter()
    centroids = {"torch": fit_torch, "faiss": fit_faiss, "sklearn": fit_sklearn}[method](features, k, args)
    wall = time.perf_counter() - start
    np.save(Path(args.workdir) / f"centroids_{method}_{k}.npy", centroids)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mb": peak_mb}))


# ----------------------------------------------------------------------------------- main

def available(method: str) -> str | None:
    """None when the method can run, else why not."""
    module = {"torch": None, "faiss": "faiss", "sklearn": "sklearn"}[method]
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed (pip install {'faiss-cpu' if module == 'faiss' else 'scikit-learn'})"
    return None


def versions() -> str:
    found = [f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for module in ("faiss", "sklearn"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    return ", ".join(found)


def run_worker(argv: list[str], method: str, k: int, path: Path, env: dict) -> dict | None:
    """One fit of ``method`` in a fresh process: its wall time and peak RSS, or None (printed)
    when it failed. Its centroids are left in the work directory (the same for every repeat:
    each method is seeded)."""
    command = [sys.executable, __file__, *argv, "--worker", method, str(k),
               "--features_file", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{method} k={k}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if bool(args.checkpoint) != bool(args.pathDB):
        print("error: --checkpoint and --pathDB go together", file=sys.stderr)
        return 2
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; {versions()}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    path = features_path(args)
    features = np.load(path, mmap_mode="r")
    print(f"features: {path} ({features.shape[0]} x {features.shape[1]})")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads)}
    runnable = []
    for method in args.methods:
        why = available(method)
        if why:
            print(f"{method}: skipped, {why}")
        else:
            runnable.append(method)
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeats):  # alternated, so that a slow spell hits every method alike
        for method in runnable:
            for k in args.ks:
                result = run_worker(argv, method, k, path, env)
                if result is not None:
                    runs.setdefault((method, k), []).append(result)
    rows = [(method, k, [r["wall_s"] for r in results], max(r["peak_mb"] for r in results),
             inertia(features, np.load(Path(args.workdir) / f"centroids_{method}_{k}.npy")))
            for (method, k), results in runs.items()]
    best = {k: min(r[4] for r in rows if r[1] == k) for k in {r[1] for r in rows}}
    print(f"\n{'method':<10}{'k':>6}{'median s':>10}{'min-max s':>16}{'peak MB':>10}"
          f"{'inertia':>16}{'vs best':>10}")
    for method, k, walls, peak, value in sorted(rows, key=lambda r: (r[1], r[0])):
        spread = f"{min(walls):.1f}-{max(walls):.1f}"
        print(f"{method:<10}{k:>6}{statistics.median(walls):>10.2f}{spread:>16}{peak:>10.0f}"
              f"{value:>16.6g}{value / best[k]:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
