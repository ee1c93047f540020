"""The evaluation suite: every task, for the model and its baselines, as one JSON-able dict.

    from gritkit.evaluate import evaluate
    results = evaluate("runs/model", quick=True)          # or a GritLM, or "minilm"
    results["tasks"]["debian-search"]["model"]["ndcg@10"]

Tasks are read from a ``gritkit data build`` directory (built on first use if missing).
Baselines: ``lexical`` (BM25 for retrieval, TF-IDF for classification/clustering, the lead
words for summaries, the uniform distribution for perplexity), ``random`` (a fixed random vector
per text) and ``minilm`` (all-MiniLM-L6-v2 via sentence-transformers, skipped with a note when
not installed). ``quick`` subsamples every task by a hash of item ids, for tests and smoke runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..datasets.common import read_json, sha256_file, stable_fraction
from . import classification, generation, retrieval
from .embedders import MINILM, GritEmbedder, RandomEmbedder, load_grit, load_minilm, minilm_available

# task name -> (kind, eval file under <data>/eval/)
TASKS = {
    "debian-search": ("retrieval", "debian-search"),
    "faq-qa": ("retrieval", "faq-qa"),
    "wordnet-reverse-dictionary": ("retrieval", "wordnet-reverse-dictionary"),
    "stdlib-code-search": ("retrieval", "stdlib-code-search"),
    "debian-section-classification": ("classification", "debian-section"),
    "wordnet-supersense-classification": ("classification", "wordnet-supersense"),
    "debian-section-clustering": ("clustering", "debian-section"),
    "wordnet-supersense-clustering": ("clustering", "wordnet-supersense"),
    "debian-summary": ("summary", "debian-summary"),
    "heldout-perplexity": ("perplexity", "heldout-perplexity"),
}
EMBEDDING_KINDS, GENERATION_KINDS = ("retrieval", "classification", "clustering"), ("summary", "perplexity")
MAIN_METRIC = {"retrieval": "ndcg@10", "classification": "accuracy", "clustering": "v_measure",
               "summary": "rougeL", "perplexity": "perplexity"}
BASELINES = ("lexical", "random", MINILM)
_KEYS = {"retrieval": ("queries", "corpus", "qrels", "instruction"), "labelled": ("ids", "texts", "labels", "instruction"),
         "summary": ("items",), "perplexity": ("items",)}
# Sizes: (full, quick). Retrieval: queries, corpus; labelled: items; generation: items.
SIZES = {"retrieval": ((None, None), (60, 240)), "labelled": ((None,), (400,)), "summary": ((100,), (8,)),
         "perplexity": ((600,), (24,))}
QUICK_MAX_LENGTH = 256  # --quick also truncates embedded texts to 256 tokens (full runs: 512)


def check_tasks(names) -> list[str]:
    """The task names to run (all when ``names`` is empty); ``ValueError`` for an unknown one."""
    names = list(names or TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {', '.join(map(repr, unknown))}; choose from {', '.join(TASKS)}")
    return names


def load_task(data_dir: Path, file: str) -> dict:
    """One evaluation task file, checked for the keys its kind needs."""
    path = Path(data_dir) / "eval" / f"{file}.json"
    task = read_json(path)
    keys = _KEYS.get(task.get("kind") if isinstance(task, dict) else None)
    if keys is None or any(k not in task for k in keys):
        raise ValueError(f"{path}: corrupted data file (not a valid evaluation task); rebuild with `gritkit data build --force`")
    return task


def _by_hash(keys, limit, salt):
    keys = sorted(keys, key=lambda k: stable_fraction(f"{salt}:{k}"))
    return keys if limit is None else keys[:limit]


def subsample(task: dict, quick: bool) -> dict:
    """A hash-chosen subset of the task (the same on every machine); the full task when no limit applies."""
    kind = task["kind"]
    limits = SIZES[kind][1 if quick else 0]
    if kind == "retrieval":
        queries = _by_hash(task["queries"], limits[0], "q")
        relevant = {d for q in queries for d in task["qrels"][q]}
        others = [d for d in _by_hash(task["corpus"], None, "d") if d not in relevant]
        room = None if limits[1] is None else max(limits[1] - len(relevant), 0)
        docs = sorted(relevant | set(others[:room]))
        return dict(task, queries={q: task["queries"][q] for q in queries}, corpus={d: task["corpus"][d] for d in docs},
                    qrels={q: task["qrels"][q] for q in queries})
    if kind == "labelled":
        keep = set(_by_hash(range(len(task["ids"])), limits[0], "l"))
        pick = lambda key: [v for i, v in enumerate(task[key]) if i in keep]  # noqa: E731
        return dict(task, ids=pick("ids"), texts=pick("texts"), labels=pick("labels"))
    return dict(task, items=[task["items"][i] for i in sorted(_by_hash(range(len(task["items"])), limits[0], "g"))])


def main_scores(entry: dict) -> dict[str, float]:
    """``{system: value of the task's main metric}`` for one task entry of the results."""
    metric = MAIN_METRIC[entry["kind"]]
    return {who: scores[metric] for who, scores in entry.items() if isinstance(scores, dict) and metric in scores}


def _resolve_model(model, max_length: int, overrides: dict | None = None):
    """(GritLM or None, embedder) from a GritLM, a directory, 'minilm', or an embedder."""
    if isinstance(model, str) and model == MINILM:
        return None, load_minilm()
    if isinstance(model, (str, Path)):
        return load_grit(str(model), max_length=max_length, overrides=overrides)
    if overrides:
        raise TypeError("GritConfig overrides apply to a model loaded by name or path; for a GritLM use with_config()")
    from ..model.gritlm import GritLM

    if isinstance(model, GritLM):
        return model, GritEmbedder(model, max_length=max_length)
    if hasattr(model, "encode_queries"):
        return None, model
    raise TypeError(f"cannot evaluate a {type(model).__name__}: pass a GritLM, a model directory or 'minilm'")


def evaluate(model, tasks=None, quick: bool = False, data_dir=None, baselines=BASELINES, log=print,
             overrides: dict | None = None) -> dict:
    """Run ``tasks`` (default all) on ``model`` and ``baselines``; returns ``{"tasks": {...}, ...}``.

    ``overrides`` (GritConfig fields such as ``{"attention": "causal"}``) change how a model
    loaded by name or path embeds, and are recorded in the results.

    Each task maps to ``{"kind", "size", "model": {metric: value}, "<baseline>": {...}}``. Generation
    tasks need a GritLM and are skipped (with a note) for a pure embedder such as MiniLM.
    """
    from ..datasets.build import DEFAULT_OUT, MANIFEST, build

    names = check_tasks(tasks)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {', '.join(map(repr, unknown))}; choose from {', '.join(BASELINES)}")
    grit, embedder = _resolve_model(model, QUICK_MAX_LENGTH if quick else 512, overrides)
    data_dir = Path(data_dir or DEFAULT_OUT)
    if not (data_dir / MANIFEST).is_file():
        log(f"no evaluation data in {data_dir}: building it")
        build(data_dir, log=log)
    embedders = [embedder]
    notes = []
    if "random" in baselines:
        embedders.append(RandomEmbedder())
    if MINILM in baselines and embedder.name != MINILM:
        reason = minilm_available()
        if reason:
            notes.append(f"minilm baseline skipped: {reason}")
        else:
            embedders.append(load_minilm())
    results = {}
    features: dict = {}
    for name in names:
        kind, file = TASKS[name]
        task = subsample(load_task(data_dir, file), quick)
        start = time.perf_counter()
        if kind in GENERATION_KINDS and grit is None:
            notes.append(f"{name} skipped for {embedder.name}: it is not a generative model")
            continue
        entry = _run_task(kind, task, grit, embedders, "lexical" in baselines, features, file)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        results[name] = entry
        log(f"  {name}: " + ", ".join(f"{who} {value:.4f}" for who, value in main_scores(entry).items()))
    return {"tasks": results, "model": embedder.name if grit is None else str(getattr(grit, "name_or_path", "model")),
            "quick": quick, "data_manifest_sha256": sha256_file(data_dir / MANIFEST), "notes": notes,
            "grit_config": grit.config.to_dict() if grit is not None else None,
            "main_metric": {n: MAIN_METRIC[TASKS[n][0]] for n in results}}


def _run_task(kind, task, grit, embedders, lexical, features, file) -> dict:
    entry = {"kind": kind}
    if kind == "retrieval":
        entry["size"] = {"queries": len(task["queries"]), "corpus": len(task["corpus"])}
        for embedder in embedders:
            entry[embedder.name] = retrieval.evaluate_retrieval(task, embedder)
        if lexical:
            entry["bm25"] = retrieval.evaluate_bm25(task)
    elif kind in ("classification", "clustering"):
        entry["size"] = {"items": len(task["texts"]), "labels": len(set(task["labels"]))}
        score = classification.classify if kind == "classification" else classification.cluster
        args = (task["labels"], task["ids"]) if kind == "classification" else (task["labels"],)
        for embedder in embedders:
            key = (embedder.name, file)
            if key not in features:  # classification and clustering share the same texts
                features[key] = embedder.encode_queries(task["texts"], task["instruction"])
            entry[embedder.name] = score(features[key], *args)
        if lexical:
            lexical_features = (classification.tfidf_features(task["texts"]) if kind == "classification"
                                else classification.tfidf_for_clustering(task["texts"]))
            entry["tfidf"] = score(lexical_features, *args)
    elif kind == "summary":
        entry["size"] = {"items": len(task["items"])}
        references = [item["reference"] for item in task["items"]]
        predictions = generation.summarise(grit, task["items"])
        entry["model"] = generation.rouge_l(predictions, references)
        entry["examples"] = [{"reference": r, "prediction": p} for r, p in list(zip(references, predictions))[:3]]
        if lexical:
            entry["lead"] = generation.rouge_l([generation.lead_summary(i["source"]) for i in task["items"]], references)
    else:
        entry["size"] = {"items": len(task["items"])}
        entry["model"] = generation.perplexity(grit, task["items"])
        if lexical:
            vocab = len(grit.tokenizer)
            entry["uniform"] = {"perplexity": float(vocab)}
    return entry
