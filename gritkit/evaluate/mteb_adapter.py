"""Run a GritLM through ``mteb.evaluate`` (mteb 2.x), and offline custom tasks built from our data.

    import mteb
    from gritkit.evaluate.mteb_adapter import mteb_encoder, retrieval_task
    encoder = mteb_encoder(model)                          # a GritLM
    mteb.evaluate(encoder, retrieval_task(task_dict), cache=None)   # offline
    mteb.evaluate(encoder, mteb.get_tasks(tasks=["SciFact"]))       # real tasks need the HF hub

mteb is optional and imported only here. Queries get the task's instruction (GRIT's custom
instruction if given, else the mteb task's description); documents are embedded without one, as in
GRIT. Vectors are unit-norm, so mteb's cosine similarity is the dot product.
"""

from __future__ import annotations


def mteb_encoder(model, instructions: dict[str, str] | None = None, batch_size: int = 32, max_length: int = 512):
    """An ``mteb`` encoder (``AbsEncoder`` subclass) wrapping a GritLM.

    ``instructions`` maps an mteb task name to the query instruction to use for it.
    """
    import numpy as np
    from mteb.models import ModelMeta
    from mteb.models.model_meta import ScoringFunction
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.types import PromptType

    class GritMTEBEncoder(AbsEncoder):
        def __init__(self):
            self.model = model
            self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
                name="gritkit/" + str(getattr(model.model.config, "_name_or_path", "") or "model").strip("/").split("/")[-1],
                revision="local", similarity_fn_name=ScoringFunction.COSINE))

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            texts = [text for batch in inputs for text in batch["text"]]
            if prompt_type == PromptType.document:
                instruction = ""
            else:
                instruction = (instructions or {}).get(task_metadata.name) or task_metadata.description
            vectors = model.encode(texts, instruction=instruction, batch_size=batch_size, max_length=max_length)
            return np.asarray(vectors, dtype=np.float32)

    return GritMTEBEncoder()


def retrieval_task(task: dict, name: str = "GritkitRetrieval"):
    """An offline mteb retrieval task (split ``test``) from a gritkit retrieval task dict.

    The data live in memory, so nothing is fetched from the hub.
    """
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    split = RetrievalSplitData(
        queries=Dataset.from_list([{"id": q, "text": t} for q, t in task["queries"].items()]),
        corpus=Dataset.from_list([{"id": d, "text": t, "title": ""} for d, t in task["corpus"].items()]),
        relevant_docs=task["qrels"], top_ranked=None)

    class GritkitRetrievalTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name, description=task["instruction"], type="Retrieval", main_score="ndcg_at_10",
            reference="https://github.com/gritkit", dataset={"path": "local/" + name, "revision": "local"},
            category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"],
            date=("2023-01-01", "2026-01-01"), domains=["Written"], task_subtypes=[], license="not specified",
            annotations_creators="derived", dialect=[], sample_creation="found", bibtex_citation="")

        def load_data(self, **kwargs) -> None:
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return GritkitRetrievalTask()


def evaluate_with_mteb(model, task: dict, name: str = "GritkitRetrieval") -> dict[str, float]:
    """Scores of a GritLM on a gritkit retrieval task computed by ``mteb.evaluate`` (no cache, offline)."""
    import mteb

    result = mteb.evaluate(mteb_encoder(model), retrieval_task(task, name), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    return {"ndcg@10": scores["ndcg_at_10"], "mrr@10": scores["mrr_at_10"], "recall@100": scores["recall_at_100"]}
