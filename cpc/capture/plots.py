"""Plots of a captured epoch: what a researcher looks at first.

    python -m cpc.capture.plots <pathCaptureSave>/<epoch> --out DIR [--windows 3]
        [--phones phones.txt] [--run RUN_DIR]

Writes, when the capture holds what they need:
- ``alignment_window<i>.png`` (the ``--windows`` windows with the most phone changes): on one
  axis of the window's 10 ms frames, the phone segments (phone_align) above the CPC-CTC
  alignment (cpcctc_align) and cell log-scores (cpcctc_log_scores) of the anchors t = 0, M, 2M..,
  each of which aligns its predictions to the M frames t+1..t+M, so together they tile the
  window. Rows are the criterion's aligned columns: blank, self-loop, P_1..P_K. Which extra
  columns a run has comes from ``--run`` (its checkpoint_args.json) or, without it, from the
  capture (pred and conv_repr: the blank is one vector for every anchor, the self-loop is z_t);
- ``pca_speaker.png`` / ``pca_phone.png``: a 2-D PCA projection of ctx_repr frames coloured by
  speaker (speaker_align) and by phone (phone_align), with a legend of the names (phones.txt
  gives the phone names) or, for many classes, a colour bar keyed to them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cpc.capture.options import plots_parser
from cpc.utils.cli import answer_help
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (matplotlib, torch...)
    handle_interrupts()
    answer_help(plots_parser(__doc__), sys.argv[1:])

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, hsv_to_rgb  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from cpc.capture.loader import CaptureLoader  # noqa: E402
from cpc.utils import checkpoint as ckpt  # noqa: E402
from cpc.utils.constants import SAMPLE_RATE  # noqa: E402
from cpc.utils.errors import CPCError  # noqa: E402

LEGEND_MAX = 40  # more classes than this get a colour bar instead of a legend


# --------------------------------------------------------------------------- data shaping

def pca_2d(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of ``(N, D)`` frames on their two main principal axes, and the share of the
    variance each axis explains."""
    centred = frames - frames.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    return centred @ components[:2].T, variance[:2] / max(variance.sum(), 1e-30)


def read_phone_names(phones_txt: str | Path | None) -> dict[int, str]:
    """id -> symbol from a corpus phones.txt (``<id> <symbol>`` lines); {} without one."""
    if phones_txt is None:
        return {}
    pairs = (line.split() for line in Path(phones_txt).read_text().splitlines() if line.strip())
    return {int(i): name for i, name in pairs}


@dataclass(frozen=True, kw_only=True)
class ColumnLayout:
    """The CPC-CTC aligned columns before the heads' predictions, and the time direction;
    ``None`` fields are unknown (columns then get neutral names)."""

    learn_blank: bool | None
    self_loop: bool | None
    reverse: bool = False


UNKNOWN_LAYOUT = ColumnLayout(learn_blank=None, self_loop=None)


def layout_from_args(saved: dict) -> ColumnLayout:
    """The layout of a run from its ``checkpoint_args.json``."""
    return ColumnLayout(learn_blank=bool(saved.get("CPCCTCLearnBlank")),
                        self_loop=bool(saved.get("CPCCTCSelfLoop")),
                        reverse=saved.get("cpc_mode") == "reverse")


def infer_layout(pred: torch.Tensor, conv: torch.Tensor) -> ColumnLayout:
    """The layout from captured columns ``pred (B, W, K', D)`` and ``conv_repr (B, T, D)``:
    a learned blank is column 0 and one vector for every anchor; the self-loop column that
    follows is the anchor's own z_t (layer-normed with the CPCCTCNormalize* flags, and in
    reversed time order under ``cpc_mode reverse``). A reversed run without a self-loop reads
    as forward: pass its run directory to be sure."""
    n_columns, window = pred.shape[2], pred.shape[1]
    first = pred[:, :, 0]
    blank = n_columns > 1 and torch.allclose(first, first[:1, :1].expand_as(first))
    if n_columns - int(blank) > 1:
        column = pred[:, :, int(blank)]
        for reverse in (False, True):
            z = (conv.flip(1) if reverse else conv)[:, :window].to(column.dtype)
            if any(torch.allclose(column, candidate, atol=1e-5)
                   for candidate in (z, F.layer_norm(z, z.shape[-1:]))):
                return ColumnLayout(learn_blank=blank, self_loop=True, reverse=reverse)
    return ColumnLayout(learn_blank=blank, self_loop=False)


def row_labels(n_columns: int, layout: ColumnLayout) -> list[str]:
    """Names of the aligned columns, in the criterion's order: [blank] [self-loop] P_1..P_K."""
    if layout.learn_blank is None or layout.self_loop is None:
        return [f"column {j}" for j in range(n_columns)]
    extras = ["blank"] * layout.learn_blank + ["self-loop $z_t$"] * layout.self_loop
    if n_columns <= len(extras):
        raise ValueError(f"{n_columns} aligned columns leave no prediction after "
                         f"{' and '.join(extras)}")
    return extras + [f"$P_{{{k}}}$" for k in range(1, n_columns - len(extras) + 1)]


def window_frames(indices: np.ndarray, n_frames: int, reverse: bool) -> np.ndarray:
    """Frames in the criterion's time order -> frames of the window (mirrored under reverse)."""
    return n_frames - 1 - indices if reverse else indices


def matched_frames(anchor: int, n_matched: int, n_frames: int, reverse: bool) -> np.ndarray:
    """Window frames matched by ``anchor`` (criterion's time order): t+1..t+M, mirrored under
    ``reverse``."""
    return window_frames(anchor + 1 + np.arange(n_matched), n_frames, reverse)


def tile_alignment(log_scores: np.ndarray, align: np.ndarray, n_frames: int, reverse: bool
                   ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """One window's CPC-CTC cells on the window's frame axis, anchors t = 0, M, 2M...

    log_scores ``(W, M, K')`` and align ``(W, M)`` of the window's W anchors. Returns the
    ``(K', n_frames)`` grid of cell log-scores (NaN where no drawn anchor matches the frame,
    or the cell is masked), the alignment path of each drawn anchor as (frames, columns), and
    the anchors' own frames.
    """
    n_anchors, n_matched, n_columns = log_scores.shape
    grid = np.full((n_columns, n_frames), np.nan)
    paths, anchors = [], []
    for anchor in range(0, n_anchors, n_matched):
        frames = matched_frames(anchor, n_matched, n_frames, reverse)
        grid[:, frames] = np.where(np.isfinite(log_scores[anchor]), log_scores[anchor], np.nan).T
        paths.append((frames, align[anchor]))
        anchors.append(int(window_frames(np.array(anchor), n_frames, reverse)))
    return grid, paths, anchors


def phone_segments(phones: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of one label as ``(start, end, phone)`` frames, end exclusive."""
    changes = np.flatnonzero(np.diff(phones)) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes, [len(phones)]])
    return [(int(s), int(e), int(phones[s])) for s, e in zip(starts, ends)]


def label_levels(centres: list[float], widths: list[float]) -> list[int]:
    """Row of each label (centres ascending) so that labels on one row never overlap: the
    lowest row whose last label ends before this one starts."""
    row_ends: list[float] = []
    levels = []
    for centre, width in zip(centres, widths):
        start = centre - width / 2
        level = next((i for i, end in enumerate(row_ends) if end <= start), len(row_ends))
        if level == len(row_ends):
            row_ends.append(0.0)
        row_ends[level] = centre + width / 2
        levels.append(level)
    return levels


def busiest_windows(phones: torch.Tensor, n: int) -> list[int]:
    """The ``n`` windows of ``phones (B, T)`` with the most phone changes, in window order."""
    changes = (phones[:, 1:] != phones[:, :-1]).sum(dim=1)
    order = sorted(range(len(phones)), key=lambda i: (-int(changes[i]), i))
    return sorted(order[:n])


def class_colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct colours: tab10 up to 10; up to :data:`LEGEND_MAX`, hues a golden angle
    apart in three shades (neighbouring ids far apart); beyond, a spectrum (for a colour bar)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i)[:3] for i in range(n)]
    if n <= LEGEND_MAX:
        shades = ((0.8, 0.8), (0.6, 0.5), (0.9, 0.95))  # (saturation, value)
        return [tuple(hsv_to_rgb((i * 0.618034 % 1, *shades[i % 3]))) for i in range(n)]
    return [plt.get_cmap("nipy_spectral")(0.05 + 0.9 * i / (n - 1))[:3] for i in range(n)]


# --------------------------------------------------------------------------- figures

def plot_alignment(phones: np.ndarray, log_scores: np.ndarray, align: np.ndarray, *,
                   rows: list[str], reverse: bool, path: Path, names: dict[int, str],
                   title: str) -> None:
    """One window: phone segments above the tiled CPC-CTC cells, on one frame axis."""
    n_frames = len(phones)
    grid, paths, anchors = tile_alignment(log_scores, align, n_frames, reverse)
    segments = phone_segments(phones)
    width = float(np.clip(3 + 0.1 * n_frames, 8, 18))
    frames_per_char = n_frames / (0.85 * width) * 0.075  # 8 pt characters, 85 % of the width
    labels = [names.get(phone, str(phone)) for _, _, phone in segments]
    levels = label_levels([(s + e - 1) / 2 for s, e, _ in segments],
                          [(len(label) + 2) * frames_per_char for label in labels])
    n_levels = max(levels) + 1
    strip_height, cells_height = 0.1 + 0.22 * n_levels, 0.3 + 0.4 * len(rows)
    fig = plt.figure(figsize=(width, strip_height + cells_height + 0.2))
    grid_spec = fig.add_gridspec(2, 2, width_ratios=[1, 0.015], wspace=0.02, hspace=0.08,
                                 height_ratios=[strip_height, cells_height])
    strip = fig.add_subplot(grid_spec[0, 0])
    cells = fig.add_subplot(grid_spec[1, 0], sharex=strip)
    for i, ((start, end, _), label, level) in enumerate(zip(segments, labels, levels)):
        strip.axvspan(start - 0.5, end - 0.5, color="0.8" if i % 2 else "0.92", linewidth=0)
        strip.text((start + end - 1) / 2, level + 0.5, label, ha="center", va="center",
                   fontsize=8)
    strip.set_ylim(n_levels, 0)
    strip.set_yticks([])
    strip.set_ylabel("phone", rotation=0, ha="right", va="center")
    strip.tick_params(labelbottom=False)
    strip.set_title(title, fontsize=10)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = cells.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap=cmap,
                         interpolation="nearest",
                         extent=(-0.5, n_frames - 0.5, -0.5, len(rows) - 0.5))
    for i, (frames, columns) in enumerate(paths):
        cells.plot(frames, columns, "-o", color="C3", markersize=4, linewidth=1.5,
                   markeredgecolor="white",
                   label="alignment (posterior argmax)" if i == 0 else None)
    cells.plot(anchors, np.full(len(anchors), -0.5), "^", color="black", markersize=7,
               clip_on=False, label=f"anchor $c_t$ (matches frames t+1..t+{log_scores.shape[1]})")
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for start, _, _ in segments[1:]:
        strip.axvline(start - 0.5, color="0.3", linestyle="--", linewidth=1)
        cells.axvline(start - 0.5, color="white", linestyle="--", linewidth=1,
                      path_effects=outline)
    cells.plot([], [], color="white", linestyle="--", path_effects=outline,
               label="phone boundary")
    cells.fill_between([], [], color="0.85", label="no drawn anchor matches the frame")
    cells.set_yticks(range(len(rows)), rows)
    cells.set_xlim(-0.5, n_frames - 0.5)
    cells.xaxis.set_major_locator(MaxNLocator(integer=True))
    cells.set_xlabel("frame of the window (10 ms)")
    cells.set_ylabel("aligned column")
    below = offset_copy(cells.transAxes, fig=fig, y=-0.5, units="inches")
    cells.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncol=4,
                 fontsize=8, frameon=False)
    colour_bar = fig.colorbar(image, cax=fig.add_subplot(grid_spec[1, 1]))
    colour_bar.set_label("cell log-score", fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_pca(points: np.ndarray, variance: np.ndarray, labels: np.ndarray, *, key: str, what: str,
             path: Path, names: dict[int, str] | None = None) -> None:
    """Points coloured by class (``key``: speaker, phone), keyed by name: a legend, or a colour
    bar for many classes."""
    classes = np.unique(labels)
    colours = class_colours(len(classes))
    class_names = [(names or {}).get(int(value), str(value)) for value in classes]
    fig, ax = plt.subplots(figsize=(9, 6.5))
    masks = [labels == value for value in classes]
    handles = {}
    for i in sorted(range(len(classes)), key=lambda i: -masks[i].sum()):  # small ones on top
        handles[i] = ax.scatter(points[masks[i], 0], points[masks[i], 1], s=4, alpha=0.6,
                                color=colours[i], linewidths=0)
    if len(classes) <= LEGEND_MAX:
        ax.legend([handles[i] for i in range(len(classes))], class_names, markerscale=3,
                  fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                  ncol=1 + (len(classes) - 1) // 20, frameon=False, title=key)
    else:
        bounds = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        step = -(-len(classes) // LEGEND_MAX)
        colour_bar = fig.colorbar(plt.cm.ScalarMappable(bounds, ListedColormap(colours)), ax=ax,
                                  ticks=range(0, len(classes), step))
        colour_bar.ax.set_yticklabels(class_names[::step], fontsize=7)
        colour_bar.set_label(key)
    ax.set_title(f"PCA of {what}, by {key}")
    ax.set_xlabel(f"PC 1 ({100 * variance[0]:.0f} % of the variance)")
    ax.set_ylabel(f"PC 2 ({100 * variance[1]:.0f} % of the variance)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- driver

def column_layout(loader: CaptureLoader, run_dir: Path | None) -> ColumnLayout:
    """From the run's args when given, else inferred from pred and conv_repr when captured."""
    if run_dir is not None:
        return layout_from_args(ckpt.read_json(run_dir / ckpt.ARGS_FILE))
    if {"pred", "conv_repr"} <= set(loader.kinds):
        batch = next(iter(CaptureLoader(loader.epoch_dir, only=["pred", "conv_repr"])))
        return infer_layout(batch["pred"], batch["conv_repr"])
    print("note: pass --run RUN_DIR (or capture pred and conv_repr) to name the blank and "
          "self-loop rows of the alignment", file=sys.stderr)
    return UNKNOWN_LAYOUT


def plot_alignments(loader: CaptureLoader, out: Path, n_windows: int, names: dict[int, str],
                    layout: ColumnLayout) -> list[Path]:
    """``alignment_window<i>.png`` for the ``n_windows`` windows with the most phone changes."""
    only = CaptureLoader(loader.epoch_dir, only=["phone_align", "cpcctc_align",
                                                 "cpcctc_log_scores"])
    phones = torch.cat([batch["phone_align"] for batch in only])
    chosen = set(busiest_windows(phones, n_windows))
    written = []
    for batch in only:
        for b in range(len(batch["phone_align"])):
            window = batch["first"] + b
            if window not in chosen:
                continue
            scores = batch["cpcctc_log_scores"][b].numpy()
            title = f"window {window}"
            if "files" in batch:
                offset = int(batch["origin"]["seq_offset"][b]) / SAMPLE_RATE
                title += f": {batch['files'][b]} from {offset:.2f} s"
            path = out / f"alignment_window{window}.png"
            plot_alignment(batch["phone_align"][b].numpy(), scores, batch["cpcctc_align"][b].numpy(),
                           rows=row_labels(scores.shape[-1], layout), reverse=layout.reverse,
                           path=path, names=names, title=title)
            written.append(path)
    return written


def plot_epoch(epoch_dir: str | Path, out: str | Path, n_windows: int = 3,
               max_frames: int = 20000, phones_txt: str | Path | None = None,
               run_dir: str | Path | None = None) -> list[Path]:
    """Every plot the capture allows; returns the files written."""
    loader = CaptureLoader(epoch_dir)  # first: an incomplete capture leaves no out folder
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = read_phone_names(phones_txt)
    kinds = set(loader.kinds)
    written: list[Path] = []
    if {"phone_align", "cpcctc_align", "cpcctc_log_scores"} <= kinds and n_windows > 0:
        layout = column_layout(loader, Path(run_dir) if run_dir is not None else None)
        written += plot_alignments(loader, out, n_windows, names, layout)
    if "ctx_repr" in kinds:
        only = CaptureLoader(loader.epoch_dir, only=["ctx_repr"] + ["phone_align"] * (
            "phone_align" in kinds))
        speaker_ids = sorted({s["speaker"] for s in loader.sequences})
        speaker_of_file = torch.tensor([speaker_ids.index(s["speaker"])
                                        for s in loader.sequences])
        frames, speakers, phones = [], [], []
        for batch in only:
            frames.append(batch["ctx_repr"].flatten(0, 1).float())
            speakers.append(speaker_of_file[batch["origin"]["frame_seq_index"]].flatten())
            if "phone_align" in batch:
                phones.append(batch["phone_align"].flatten())
        frames_np = torch.cat(frames).numpy()
        keep = np.linspace(0, len(frames_np) - 1, min(max_frames, len(frames_np))).astype(int)
        points, variance = pca_2d(frames_np[keep])
        what = f"ctx_repr of {len(keep)} frames, epoch {loader.epoch_dir.name}"
        plot_pca(points, variance, torch.cat(speakers).numpy()[keep], key="speaker", what=what,
                 path=out / "pca_speaker.png", names=dict(enumerate(speaker_ids)))
        written.append(out / "pca_speaker.png")
        if phones:
            plot_pca(points, variance, torch.cat(phones).numpy()[keep], key="phone", what=what,
                     path=out / "pca_phone.png", names=names)
            written.append(out / "pca_phone.png")
    return written


def main(argv: list[str] | None = None) -> int:
    args = plots_parser(__doc__).parse_args(argv)
    try:
        written = plot_epoch(args.epoch_dir, args.out, args.windows, phones_txt=args.phones,
                             run_dir=args.run)
    except (CPCError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not written:
        print("nothing to plot: capture ctx_repr (PCA) or phone_align + CPC-CTC alignments",
              file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
