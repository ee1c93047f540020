"""The generative side: perplexity on held-out chats and a one-line summary task scored by ROUGE-L.

Perplexity is exp of the mean next-token cross-entropy over the *answer* tokens of held-out
chats (the user turn is context, as in GRIT's generative loss), causal attention, computed by
transformers' own loss on labels with the user turn set to -100. ROUGE-L (F-measure, Porter
stemming) comes from Google's ``rouge-score`` package.
"""

from __future__ import annotations

import math

import torch


def answer_labels(model, messages: list[dict], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of a whole chat and labels that are -100 everywhere but the last answer (and its EOS)."""
    prompt_ids = model.chat_input_ids(messages[:-1])
    full_text = model.tokenizer.apply_chat_template(messages, tokenize=False)
    ids = model.tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not render the prompt as a prefix of the full chat")
    ids = ids[:max_length]
    labels = [-100] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids):]
    return ids, labels


def perplexity(model, chats: list[dict], max_length: int = 512, batch_size: int = 8) -> dict[str, float]:
    """Token-level perplexity of ``model`` (a GritLM) on the answers of ``chats``."""
    items = [answer_labels(model, chat["messages"], max_length) for chat in chats]
    items = [(ids, labels) for ids, labels in items if any(l != -100 for l in labels[1:])]
    total_loss, total_tokens = 0.0, 0
    pad = model.tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = items[start: start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=model.device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=model.device)
            attention = (torch.arange(width)[None, :] < torch.tensor([len(i) for i, _ in batch])[:, None]).long()
            logits = model.model(input_ids=input_ids, attention_mask=attention.to(model.device)).logits.float()
            # Shifted by hand (not the model's loss) so the sum over tokens is exact across batches.
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                                     reduction="sum")
            total_loss += float(loss)
            total_tokens += int((labels[:, 1:] != -100).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": total_tokens}


def rouge_l(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-L F-measure (with stemming) of predictions against references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {"rougeL": sum(scores) / max(len(scores), 1)}


def summarise(model, items: list[dict], max_new_tokens: int = 24, batch_size: int = 8) -> list[str]:
    """Greedy one-line answers of ``model`` to each item's prompt (first line only)."""
    answers = []
    for start in range(0, len(items), batch_size):
        prompts = [item["prompt"] for item in items[start: start + batch_size]]
        answers.extend(model.generate(prompts, max_new_tokens=max_new_tokens))
    return [(a.strip().splitlines() or [""])[0] for a in answers]


def lead_summary(text: str, words: int = 8) -> str:
    """The lead baseline: the first ``words`` words of the description's first sentence."""
    first = text.split(". ")[0]
    return " ".join(first.split()[:words])
