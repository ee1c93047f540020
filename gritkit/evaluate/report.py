"""Results as a markdown table (the model next to its baselines) and one PNG bar chart per side."""

from __future__ import annotations

from pathlib import Path

from .suite import EMBEDDING_KINDS, GENERATION_KINDS, main_scores


def markdown_table(results: dict) -> str:
    """One row per task: its main metric for the model and every baseline that ran it."""
    tasks = results["tasks"]
    systems = []
    for entry in tasks.values():
        systems.extend(s for s in main_scores(entry) if s not in systems)
    lines = ["| task | metric | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
    for name, entry in tasks.items():
        scores = main_scores(entry)
        metric = results["main_metric"][name]
        cells = [f"{scores[s]:.4f}" if s in scores else "" for s in systems]
        lines.append(f"| {name} | {metric} | " + " | ".join(cells) + " |")
    notes = [f"- {note}" for note in results.get("notes", [])]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot_side(results: dict, kinds: tuple[str, ...], path: str | Path, title: str) -> Path | None:
    """Grouped bars (one group per task, one bar per system) of the main metric; None if no task."""
    tasks = {n: e for n, e in results["tasks"].items() if e["kind"] in kinds}
    if not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = []
    for entry in tasks.values():
        systems.extend(s for s in main_scores(entry) if s not in systems)
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.2 * len(tasks) + 1, 3.6), squeeze=False)
    for ax, (name, entry) in zip(axes[0], tasks.items()):
        scores = main_scores(entry)
        names = [s for s in systems if s in scores]
        ax.bar(range(len(names)), [scores[s] for s in names], color=[f"C{systems.index(s)}" for s in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_ylabel(results["main_metric"][name], fontsize=7)
        if entry["kind"] == "perplexity":
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict, out_json: str | Path) -> list[Path]:
    """Write ``out_json``, ``<stem>.md`` and ``<stem>-embedding.png`` / ``<stem>-generation.png`` beside it."""
    from ..datasets.common import write_json

    out_json = Path(out_json)
    write_json(out_json, results)
    table = out_json.with_suffix(".md")
    table.write_text(markdown_table(results), encoding="utf-8")
    written = [out_json, table]
    for side, kinds in (("embedding", EMBEDDING_KINDS), ("generation", GENERATION_KINDS)):
        png = plot_side(results, kinds, out_json.with_name(f"{out_json.stem}-{side}.png"), f"{results['model']}: {side}")
        if png:
            written.append(png)
    return written
