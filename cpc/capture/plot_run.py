"""Plots of a training run's history (its ``checkpoint_logs.json``).

    python -m cpc.capture.plot_run RUN_DIR [--out DIR]

Writes into DIR (default ``RUN_DIR/plots``), each when the log holds what it needs:
- ``run_loss.png``: training and validation loss over the epochs (the best epoch marked, and
  the criterion's loss at chance for a CPC / CPC-CTC run with its checkpoint_args.json), the
  mean prediction accuracy (locAcc_*), and with PASE workers each worker's losses;
- ``run_probes.png``: the linear probes' best validation accuracies (speaker last frame and
  mean-pooled, phone frames) and the CTC phone probe's PER, over the epochs they followed;
- ``run_health.png``: the health checks over training steps (``health_steps``; per epoch from
  ``health_<figure>`` for logs without them): loss, z and c cosines within / across windows,
  dead and saturated units, gradient norms, score margin, with the epochs on a top axis;
  collapse events (rollback, stop, warn, recovered) are vertical lines.
A panel whose keys the log lacks (older runs, PASE runs) is left out.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cpc.capture.options import plot_run_parser
from cpc.utils.cli import answer_help
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (matplotlib, torch...)
    handle_interrupts()
    answer_help(plot_run_parser(__doc__), sys.argv[1:])

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cpc.utils import checkpoint as ckpt  # noqa: E402
from cpc.utils.errors import CPCError  # noqa: E402

Series = dict[str, tuple[list[float], list[float]]]  # legend label -> (x, y)

PROBES = {"speaker_best_val_acc": "speaker (last frame)",
          "speaker_mean_best_val_acc": "speaker (mean-pooled)",
          "phone_best_val_acc": "phone (frame accuracy)"}
HEALTH_PANELS = (  # title, figures (a trailing "_" is a prefix), log scale
    ("loss at the checks", ("loss",), False),
    ("cosine of frames (within / across windows)",
     ("z_cos_within", "z_cos_across", "c_cos_within", "c_cos_across"), False),
    ("fraction of units", ("dead_units", "saturated"), False),
    ("gradient norm", ("grad_",), True),
    ("score margin (positive - negatives)", ("score_margin",), False),
)
EVENT_STYLES = {"rollback": ("m", "-"), "stop": ("black", "-"), "warn": ("0.45", "-."),
                "recovered": ("0.45", ":")}  # colour and line style of collapse events
MARKERS = "osD^vP"


@dataclass
class Panel:
    """One subplot: curves, horizontal reference levels and highlighted points."""

    title: str
    x_label: str
    series: Series
    log_scale: bool = False
    levels: dict[str, float] = field(default_factory=dict)
    stars: dict[str, tuple[float, float]] = field(default_factory=dict)
    epoch_axis: tuple[list[float], list[float]] | None = None  # (x, epoch) for a top axis


# --------------------------------------------------------------------------- data shaping

def read_logs(run_dir: Path) -> dict:
    """The run's log; ValueError (one line) when it is missing, unreadable or has no epoch."""
    path = run_dir / "checkpoint_logs.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {run_dir} a training run directory?")
    try:
        logs = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(logs, dict) or not logs.get("epoch"):
        raise ValueError(f"{path} holds no finished epoch")
    return logs


def curve(x: list, values: list | None) -> tuple[list[float], list[float]] | None:
    """(x, y) of a logged list without its missing (None, NaN) entries; None when none is
    left."""
    pairs = [(float(a), float(v)) for a, v in zip(x, values or []) if v is not None and v == v]
    return ([a for a, _ in pairs], [v for _, v in pairs]) if pairs else None


def series(curves: dict[str, tuple[list[float], list[float]] | None]) -> Series:
    """The curves that exist."""
    return {label: xy for label, xy in curves.items() if xy is not None}


def loss_panels(logs: dict, chance: float | None) -> list[Panel]:
    """Loss (chance level, best epoch), mean prediction accuracy and PASE worker losses over
    the epochs; panels without data are left out."""
    epochs = logs["epoch"]
    loss = Panel("loss", "epoch", series({"train": curve(epochs, logs.get("loss_train")),
                                          "validation": curve(epochs, logs.get("loss_val"))}))
    if chance is not None:
        loss.levels[f"chance ({chance:.4g})"] = chance
    validation, best = loss.series.get("validation"), logs.get("best_epoch")
    if validation and best is not None and float(best) in validation[0]:
        loss.stars["best epoch (checkpoint_best.pt)"] = (
            float(best), validation[1][validation[0].index(float(best))])
    accuracy = Panel("prediction accuracy (mean of locAcc over steps)", "epoch", series(
        {label: curve(epochs, [float(np.mean(steps)) if steps else None
                               for steps in logs.get(f"locAcc_{part}", [])])
         for label, part in (("train", "train"), ("validation", "val"))}))
    workers = sorted(key[len("worker_"):-len("_train")] for key in logs
                     if key.startswith("worker_") and key.endswith("_train"))
    pase = Panel("PASE worker losses", "epoch", series(
        {f"{name} ({part})": curve(epochs, logs.get(f"worker_{name}_{part}"))
         for name in workers for part in ("train", "val")}))
    return [panel for panel in (loss, accuracy, pase) if panel.series]


def probe_panels(logs: dict) -> list[Panel]:
    """The probes' best validation accuracies, and the CTC phone probe's PER, over epochs."""
    epochs = logs.get("linsep_epoch", [])
    accuracy = Panel("linear probes: best validation accuracy", "epoch (of the CPC model)",
                     series({label: curve(epochs, logs.get(key)) for key, label in PROBES.items()}))
    per = Panel("CTC phone probe: best validation PER", "epoch (of the CPC model)",
                series({"phone (CTC)": curve(epochs, logs.get("phone_ctc_best_val_per"))}))
    return [panel for panel in (accuracy, per) if panel.series]


def health_figures(logs: dict) -> tuple[str, list[float], dict[str, list]]:
    """x label, x and every figure of the health checks: per check (``health_steps``) when
    logged, else per epoch (``health_<figure>``)."""
    checks = logs.get("health_steps") or []
    if checks:
        names = sorted({key for check in checks for key in check} - {"step", "epoch"})
        return "training step", [check["step"] for check in checks], \
            {name: [check.get(name) for check in checks] for name in names}
    figures = {key[len("health_"):]: values for key, values in logs.items()
               if key.startswith("health_") and key != "health_steps"}
    return "epoch", logs["epoch"], figures


def epoch_axis(logs: dict) -> tuple[list[float], list[float]] | None:
    """(step, epoch) points for an epoch axis over training steps: each epoch ends at its last
    health check (the epoch-end one); None with fewer than two epochs checked."""
    ends: dict[int, float] = {}
    for check in logs.get("health_steps") or []:
        ends[check["epoch"]] = max(ends.get(check["epoch"], 0), check["step"])
    points = sorted((step, epoch + 1.0) for epoch, step in ends.items())
    if points and points[0][1] == 1.0:
        points.insert(0, (0.0, 0.0))
    return ([float(a) for a, _ in points], [b for _, b in points]) if len(points) > 1 else None


def health_panels(logs: dict, chance: float | None) -> list[Panel]:
    """The :data:`HEALTH_PANELS` the log has figures for (the loss with its chance level)."""
    x_label, x, figures = health_figures(logs)
    epochs = epoch_axis(logs) if x_label == "training step" else None
    panels = []
    for title, wanted, log_scale in HEALTH_PANELS:
        names = [name for key in wanted for name in sorted(figures)
                 if name == key or (key.endswith("_") and name.startswith(key))]
        panel = Panel(title, x_label, series({name.replace("_", " "): curve(x, figures[name])
                                              for name in names}), log_scale,
                      epoch_axis=epochs)
        if panel.series:
            if wanted == ("loss",) and chance is not None:
                panel.levels[f"chance ({chance:.4g})"] = chance
            panels.append(panel)
    return panels


def collapse_marks(logs: dict, x_label: str) -> list[tuple[float, str]]:
    """(x, action) of every collapse-guard event, on the health plot's x axis."""
    key = "step" if x_label == "training step" else "epoch"
    return [(float(event[key]), event["action"]) for event in logs.get("collapse_events", [])]


def chance_loss(run_dir: Path) -> float | None:
    """The criterion's loss at chance from the run's checkpoint_args.json: CPC and CPC-CTC
    runs only (None for PASE workers, other criteria, or args that are missing or do not
    build a criterion, with a note)."""
    if not (run_dir / ckpt.ARGS_FILE).is_file():
        return None
    from cpc.criterion.objective import chance_loss_of
    from cpc.feature_loader import loadArgs
    from cpc.criterion.options import criterion_name
    try:
        args = loadArgs(run_dir / ckpt.ARGS_FILE)
        return chance_loss_of(args, criterion_name(args))
    except CPCError as exc:
        print(f"note: no chance level on the loss plots: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- figures

def plot_panels(panels: list[Panel], marks: list[tuple[float, str]], title: str,
                path: Path) -> None:
    """Panels in two columns; ``marks`` (x, action) are vertical lines on every panel."""
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows), squeeze=False)
    for ax in grid.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(grid.flat, panels):
        size = 2 if max(len(x) for x, _ in panel.series.values()) > 30 else 4
        for i, (label, (x, y)) in enumerate(panel.series.items()):
            ax.plot(x, y, marker=MARKERS[i % len(MARKERS)], markersize=size, label=label)
        for label, level in panel.levels.items():
            ax.axhline(level, color="0.4", linestyle="--", label=label)
        for label, point in panel.stars.items():
            ax.plot(*point, "*", color="C1", markersize=14, label=label, zorder=3)
        for action in dict.fromkeys(action for _, action in marks):
            for i, x in enumerate(x for x, a in marks if a == action):
                colour, style = EVENT_STYLES.get(action, ("C4", "-"))
                ax.axvline(x, color=colour, linestyle=style, linewidth=1.5,
                           label=f"collapse guard: {action}" if i == 0 else None)
        if panel.log_scale:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if panel.epoch_axis is not None:
            steps, epochs = panel.epoch_axis
            top = ax.secondary_xaxis("top", functions=(lambda v: np.interp(v, steps, epochs),
                                                       lambda v: np.interp(v, epochs, steps)))
            top.xaxis.set_major_locator(MaxNLocator(integer=True))
            top.tick_params(labelsize=7)
            top.set_xlabel("epoch", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- driver

def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every plot the run's log allows; returns the files written."""
    run_dir = Path(run_dir)
    logs = read_logs(run_dir)
    out = Path(out) if out is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    chance = chance_loss(run_dir)
    minutes = f", {logs['total_seconds'] / 60:.1f} min" if "total_seconds" in logs else ""
    name = f"{run_dir.resolve().name}: {len(logs['epoch'])} epochs{minutes}"
    health = health_panels(logs, chance)
    figures = [("run_loss.png", loss_panels(logs, chance), [], name),
               ("run_probes.png", probe_panels(logs), [], f"{name}: probes on frozen features"),
               ("run_health.png", health,
                collapse_marks(logs, health[0].x_label) if health else [],
                f"{name}: training health")]
    written = []
    for file_name, panels, marks, title in figures:
        if panels:
            plot_panels(panels, marks, title, out / file_name)
            written.append(out / file_name)
    return written


def main(argv: list[str] | None = None) -> int:
    args = plot_run_parser(__doc__).parse_args(argv)
    try:
        written = plot_run(args.run_dir, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
