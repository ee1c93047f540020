"""Steps both quickstart modes share: the recipe's training config, the evaluation dependencies
check, the collapse check on the training curve and the loss plot."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

RECIPE = Path(__file__).with_name("quickstart.yaml")  # from scratch (--from-scratch); ablate's too
# Data paths in the recipes start with this; ``data_dir`` replaces it.
DATA_PREFIX = "runs/data"


def recipe_config(data_dir: str | Path = DATA_PREFIX, output_dir: str | Path = "runs/quickstart/train",
                  minutes: float = 0.0, overrides: list[str] = (), recipe: str | Path = RECIPE, **settings):
    """The trainer's config of the recipe: ``recipe`` (YAML) with its ``runs/data`` paths moved to
    ``data_dir``, ``output_dir`` and ``max_minutes`` set, then ``settings`` (TrainConfig keys), then
    ``overrides`` (``key=value`` strings, as typed on the command line)."""
    from ..training.config import config_from_dict, parse_overrides, read_config_file

    values = read_config_file(recipe)

    def moved(path: str) -> str:
        return str(Path(data_dir) / Path(path).relative_to(DATA_PREFIX)) if path.startswith(DATA_PREFIX + "/") else path

    for key in ("embedding_data", "generative_data"):
        values[key] = [moved(p) for p in values.get(key, [])]
    values["tokenizer"] = moved(values.get("tokenizer", ""))
    config = config_from_dict({**values, "output_dir": str(output_dir), "max_minutes": minutes, **settings},
                              str(recipe))
    return config_from_dict({**config.to_dict(), **parse_overrides(list(overrides))}, "override")


def check_evaluation_dependencies() -> None:
    """Fail before training, not after it, when the evaluation extras are missing."""
    import importlib.util

    modules = ("sklearn", "bm25s", "pytrec_eval", "rouge_score", "matplotlib")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"gritkit quickstart evaluates what it trains and needs the eval extras "
                         f"(missing: {', '.join(missing)}): pip install 'gritkit[eval]' (or -e '.[eval]')")


def collapse_check(records: list[dict], documents_per_batch: int) -> dict:
    """Whether the contrastive loss of the last fifth of the run stayed clearly below chance."""
    losses = [r["loss_rep"] for r in records if r.get("loss_rep") is not None]
    chance = math.log(documents_per_batch)
    tail = losses[-max(1, len(losses) // 5):] if losses else [chance]
    final = statistics.median(tail)
    return {"chance": round(chance, 3), "final_loss_rep": round(final, 3), "collapsed": final > 0.9 * chance}


def plot_losses(records: list[dict], path: Path, chance_rep: float, chance_gen: float) -> Path:
    """Both training losses against training minutes (raw and a running mean), with chance levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..training.metrics import step_seconds

    minutes = np.cumsum([step_seconds(r) / 60 for r in records])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, chance, title in ((axes[0], "loss_rep", chance_rep, "contrastive (InfoNCE)"),
                                   (axes[1], "loss_gen", chance_gen, "language modelling")):
        kept = [i for i, r in enumerate(records) if r.get(key) is not None]  # embedding_every skips steps
        values = np.array([records[i][key] for i in kept], dtype=float)
        at = minutes[kept]
        window = max(1, len(values) // 25)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(at, values, lw=0.5, alpha=0.4, color="C0")
        ax.plot(at[window - 1:], smooth, lw=1.5, color="C0", label=f"mean of {window} steps")
        ax.axhline(chance, color="grey", ls="--", lw=0.8, label="chance")
        ax.set_title(title)
        ax.set_xlabel("training minutes")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
