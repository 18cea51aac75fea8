"""Plots of a captured epoch: what a researcher looks at first.

    python -m cpc.capture.plots <pathCaptureSave>/<epoch> --out DIR [--windows 3]

Writes, when the capture holds what they need:
- ``alignment_window<i>.png``: a window's phone labels (phone_align) above its CPC-CTC
  alignment (cpcctc_align: the prediction each matched frame was aligned to, for the first
  anchor of the window) and the log-score matrix of that anchor (cpcctc_log_scores);
- ``pca_speaker.png`` / ``pca_phone.png``: a 2-D PCA projection of ctx_repr frames coloured by
  speaker (speaker_align) and by phone (phone_align).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cpc.capture.loader import CaptureLoader  # noqa: E402


def pca_2d(frames: np.ndarray) -> np.ndarray:
    """Projection of ``(N, D)`` frames on their two main principal axes."""
    centred = frames - frames.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def read_phone_names(phones_txt: str | Path | None) -> dict[int, str]:
    """id -> symbol from a corpus phones.txt (``<id> <symbol>`` lines); {} without one."""
    if phones_txt is None:
        return {}
    pairs = (line.split() for line in Path(phones_txt).read_text().splitlines() if line.strip())
    return {int(i): name for i, name in pairs}


def plot_alignment(phones: torch.Tensor, align: torch.Tensor, scores: torch.Tensor,
                   path: Path, names: dict[int, str]) -> None:
    """One window: phone labels, and the alignment and log-scores of its first anchor."""
    n_matched, n_preds = scores.shape
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=False,
                             gridspec_kw={"height_ratios": [1, 1, 2.2]})
    axes[0].step(np.arange(len(phones)), phones.numpy(), where="post")
    axes[0].set_ylabel("phone id")
    axes[0].set_title("phone labels of the window (10 ms frames)")
    for t in range(1, len(phones)):
        if phones[t] != phones[t - 1] and names:
            axes[0].annotate(names.get(int(phones[t]), ""), (t, int(phones[t])), fontsize=6)
    axes[1].step(np.arange(1, n_matched + 1), align.numpy(), where="mid", color="C1")
    axes[1].set_ylabel("prediction k")
    axes[1].set_title("CPC-CTC alignment of frames t+1..t+M (anchor t = 0)")
    image = axes[2].imshow(scores.T.numpy(), aspect="auto", origin="lower", cmap="viridis",
                           extent=(0.5, n_matched + 0.5, -0.5, n_preds - 0.5))
    axes[2].plot(np.arange(1, n_matched + 1), align.numpy(), "w.-", linewidth=1)
    axes[2].set_xlabel("matched frame (t + w)")
    axes[2].set_ylabel("prediction k")
    axes[2].set_title("cell log-scores (white: posterior-argmax alignment)")
    fig.colorbar(image, ax=axes[2], fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pca(points: np.ndarray, labels: np.ndarray, title: str, path: Path,
             names: dict[int, str] | None = None, max_legend: int = 20) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab20" if len(classes) <= 20 else "nipy_spectral")
    for i, value in enumerate(classes):
        mask = labels == value
        label = (names or {}).get(int(value), str(value))
        ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6,
                   color=cmap(i / max(1, len(classes) - 1)),
                   label=label if len(classes) <= max_legend else None)
    if len(classes) <= max_legend:
        ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_epoch(epoch_dir: str | Path, out: str | Path, n_windows: int = 3,
               max_frames: int = 20000, phones_txt: str | Path | None = None) -> list[Path]:
    """Every plot the capture allows; returns the files written."""
    epoch_dir, out = Path(epoch_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = CaptureLoader(epoch_dir)
    names = read_phone_names(phones_txt)
    kinds = set(loader.kinds)
    written: list[Path] = []
    if {"phone_align", "cpcctc_align", "cpcctc_log_scores"} <= kinds:
        windows = ((batch, b) for batch in loader for b in range(len(batch["phone_align"])))
        for _, (batch, b) in zip(range(n_windows), windows):
            path = out / f"alignment_window{batch['first'] + b}.png"
            plot_alignment(batch["phone_align"][b], batch["cpcctc_align"][b, 0],
                           batch["cpcctc_log_scores"][b, 0], path, names)
            written.append(path)
    if "ctx_repr" in kinds:
        speaker_ids = sorted({s["speaker"] for s in loader.sequences})
        speaker_of_file = torch.tensor([speaker_ids.index(s["speaker"])
                                        for s in loader.sequences])
        frames, speakers, phones = [], [], []
        for batch in loader:
            frames.append(batch["ctx_repr"].flatten(0, 1).float())
            speakers.append(speaker_of_file[batch["origin"]["frame_seq_index"]].flatten())
            if "phone_align" in kinds:
                phones.append(batch["phone_align"].flatten())
        frames_np = torch.cat(frames).numpy()
        keep = np.linspace(0, len(frames_np) - 1, min(max_frames, len(frames_np))).astype(int)
        points = pca_2d(frames_np[keep])
        plot_pca(points, torch.cat(speakers).numpy()[keep], "ctx_repr PCA by speaker",
                 out / "pca_speaker.png", dict(enumerate(speaker_ids)))
        written.append(out / "pca_speaker.png")
        if phones:
            plot_pca(points, torch.cat(phones).numpy()[keep], "ctx_repr PCA by phone",
                     out / "pca_phone.png", names)
            written.append(out / "pca_phone.png")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("epoch_dir", type=Path, help="<pathCaptureSave>/<epoch>")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--windows", type=int, default=3, help="alignment plots to draw")
    parser.add_argument("--phones", type=Path, default=None,
                        help="phones.txt of the corpus, to name the phones")
    args = parser.parse_args(argv)
    try:
        written = plot_epoch(args.epoch_dir, args.out, args.windows, phones_txt=args.phones)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not written:
        print("nothing to plot: capture ctx_repr (PCA) or phone_align + CPC-CTC alignments",
              file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
