"""What a run prints: its own summary at the end, without the noise a user cannot act on.

`quiet_noise` hides Lightning warnings and adverts that do not apply to cnn_study's runs
and TensorBoard's reader chatter; `run_summary` is the table a finished run ends with.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cnn_study.rundir import RESULTS_FILE, TENSORBOARD_DIR

HEADLINE = (
    ("test/acc", "test accuracy"),
    ("test/f1", "test F1, weighted"),
    ("test/f1_macro", "test F1, macro"),
    ("test/auroc", "test AUROC, macro"),
    ("test/ece", "test ECE, 15 bins"),
)


class _DropAdverts(logging.Filter):
    """Lightning's "💡 Tip: try installing …" lines advertise services, not fixes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_noise() -> None:
    """Hide what does not apply to cnn_study's runs (called when a run builds its objects,
    not on import, so importing the package changes nothing)."""
    # Metrics are logged per epoch on purpose (no per-step sync): this hint does not apply.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    # Lightning's own use of a torch API deprecated in torch 2.14; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # cnn_study's configure_model only sets the memory layout (and compiles): nothing sharded.
    warnings.filterwarnings("ignore", message=r".*WeightAveraging doesn't support sharding.*")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())
    # TensorBoard's reader narrates its directory watching when figures read the logs back.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)


def run_summary(results: dict[str, Any], output_dir: Path) -> Table:
    """The end of a run: headline metrics, best validation accuracy, time and where to look."""
    table = Table(title=f"cnn_study run: {results.get('status', '?')}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, label in HEADLINE:
        if isinstance(results.get(key), float):
            table.add_row(label, f"{results[key]:.4f}")
    best = results.get("best_val/acc")
    if isinstance(best, float):
        epoch = results.get("best_val_epoch")
        at = f" (epoch {epoch})" if epoch is not None else ""
        table.add_row("best val accuracy", f"{best:.4f}{at}")
    seconds = results.get("train_time_s")
    if isinstance(seconds, (int, float)):
        table.add_row("training time", f"{seconds:.1f} s, {results.get('epochs')} epochs")
    table.add_row("results", str(output_dir / RESULTS_FILE))
    figures = output_dir / "figures"
    if figures.is_dir():
        table.add_row("figures", str(figures))
    board = output_dir / TENSORBOARD_DIR
    if board.is_dir():
        table.add_row("TensorBoard", f"tensorboard --logdir {board}")
    return table


def print_table(table: Table, longest_cell: int) -> None:
    """Print on the terminal at its width; into a log or a pipe wide enough that the
    longest cell (a path, a job's overrides) stays on one line."""
    console = Console()
    if not console.is_terminal:
        console.width = max(100, longest_cell + 80)
    console.print(table)


def print_run_summary(results: dict[str, Any], output_dir: Path) -> None:
    print_table(run_summary(results, output_dir), len(str(output_dir)))
