"""What each source turns into: training pairs, generative examples, held-out evaluation tasks.

A recipe per source knows an item's id (the unit of the train/evaluation split), the texts of an
item that must never be trained on when the item is held out, and how to make:
- contrastive pairs ``{"query": [instruction, text], "pos": [text], "neg": [text]}`` (one file
  per dataset, since GRIT draws each embedding batch from a single dataset);
- generative chats ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` from real
  text under templated instructions (the FAQs are the only genuinely human-written answers);
- evaluation tasks (retrieval, labelled texts for classification/clustering, summaries).
Hard negatives are drawn from the same group (Debian section, WordNet supersense, FAQ file,
stdlib module) with a seeded generator, so they are topical but wrong.
"""

from __future__ import annotations

import random
from collections import defaultdict

INSTRUCTIONS = {
    "debian": "Given a one-line summary of a Debian package, retrieve the package's full description",
    "wordnet": "Given a definition, retrieve the word or words it defines",
    "wordnet_example": "Given a sentence, retrieve the meaning of the word it illustrates",
    "faq": "Given a question about Python or Perl, retrieve the FAQ answer",
    "stdlib": "Given a docstring, retrieve the Python function it documents",
    "debian_section": "Classify a Debian package description by its archive section",
    "wordnet_supersense": "Classify a dictionary definition by its WordNet supersense",
}


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _negatives(items: list[dict], group, doc, seed: int) -> list[str]:
    """For each item, the document of another item of the same group (or of any item if alone)."""
    rng = random.Random(seed)
    groups = defaultdict(list)
    for index, item in enumerate(items):
        groups[group(item)].append(index)
    negatives = []
    for index, item in enumerate(items):
        pool = groups[group(item)] if len(groups[group(item)]) > 1 else range(len(items))
        other = index
        while other == index and len(items) > 1:
            other = rng.choice(pool)
        negatives.append(doc(items[other]))
    return negatives


def _pairs(items, instruction, query, doc, group, seed):
    negs = _negatives(items, group, doc, seed)
    return [{"query": [instruction, query(it)], "pos": [doc(it)], "neg": [neg]} for it, neg in zip(items, negs)]


def lemmas_text(record: dict) -> str:
    return ", ".join(record["lemmas"])


class Debian:
    cross_references = False
    name = "debian"
    item_id = staticmethod(lambda r: r["source"])  # sibling binaries share descriptions: split by source
    held_texts = staticmethod(lambda r: [r["short"], r["long"]])

    @staticmethod
    def contrastive(items, seed):
        return {"debian_short_long": _pairs(items, INSTRUCTIONS["debian"], lambda r: r["short"], lambda r: r["long"],
                                            lambda r: r["section"], seed)}

    @staticmethod
    def generative(items):
        out = []
        for r in items:
            out.append(chat(f"Summarise this package description in one line.\n\n{r['long']}", r["short"]))
            out.append(chat(f"Describe the Debian package {r['package']} ({r['short']}).", r["long"]))
        return out

    @staticmethod
    def evaluation(items):
        return {
            "debian-search": dict(kind="retrieval", instruction=INSTRUCTIONS["debian"],
                                  queries={r["package"]: r["short"] for r in items},
                                  corpus={r["package"]: r["long"] for r in items},
                                  qrels={r["package"]: {r["package"]: 1} for r in items}),
            "debian-section": _labelled(items, lambda r: r["long"], lambda r: r["section"], INSTRUCTIONS["debian_section"],
                                        lambda r: r["package"]),
            "debian-summary": dict(kind="summary", items=[dict(id=r["package"], prompt=f"Summarise this package description in one line.\n\n{r['long']}",
                                                               reference=r["short"], source=r["long"]) for r in items]),
        }


class WordNet:
    cross_references = False
    name = "wordnet"
    item_id = staticmethod(lambda r: r["id"])
    held_texts = staticmethod(lambda r: [r["gloss"], *r["examples"]])

    @staticmethod
    def contrastive(items, seed):
        with_examples = [dict(r, example=e) for r in items for e in r["examples"][:1]]
        return {
            "wordnet_gloss_lemmas": _pairs(items, INSTRUCTIONS["wordnet"], lambda r: r["gloss"], lemmas_text,
                                           lambda r: r["lexname"], seed),
            "wordnet_example_gloss": _pairs(with_examples, INSTRUCTIONS["wordnet_example"], lambda r: r["example"],
                                            lambda r: f"{r['lemmas'][0]}: {r['gloss']}", lambda r: r["lexname"], seed + 1),
        }

    @staticmethod
    def generative(items):
        out = []
        for r in items:
            out.append(chat(f"Define the word \"{r['lemmas'][0]}\".", r["gloss"]))
            out.append(chat(f"What word means: {r['gloss']}?", r["lemmas"][0]))
            if r["examples"]:
                out.append(chat(f"Use the word \"{r['lemmas'][0]}\" in a sentence.", r["examples"][0]))
        return out

    @staticmethod
    def evaluation(items):
        # Synsets with the same lemma list share one document, which is relevant to each of their glosses.
        corpus = {lemmas_text(r): lemmas_text(r) for r in items}
        return {
            "wordnet-reverse-dictionary": dict(kind="retrieval", instruction=INSTRUCTIONS["wordnet"],
                                               queries={r["id"]: r["gloss"] for r in items}, corpus=corpus,
                                               qrels={r["id"]: {lemmas_text(r): 1} for r in items}),
            "wordnet-supersense": _labelled(items, lambda r: r["gloss"], lambda r: r["lexname"],
                                            INSTRUCTIONS["wordnet_supersense"], lambda r: r["id"]),
        }


class FAQ:
    name = "faq"
    cross_references = True
    item_id = staticmethod(lambda r: r["id"])
    held_texts = staticmethod(lambda r: [r["question"], r["answer"]])

    @staticmethod
    def contrastive(items, seed):
        return {"faq_question_answer": _pairs(items, INSTRUCTIONS["faq"], lambda r: r["question"], lambda r: r["answer"],
                                              lambda r: r["id"].rsplit("/", 1)[0], seed)}

    @staticmethod
    def generative(items):
        return [chat(r["question"], r["answer"]) for r in items]

    @staticmethod
    def evaluation(items):
        return {"faq-qa": dict(kind="retrieval", instruction=INSTRUCTIONS["faq"],
                               queries={r["id"]: r["question"] for r in items},
                               corpus={r["id"]: r["answer"] for r in items},
                               qrels={r["id"]: {r["id"]: 1} for r in items})}


class Stdlib:
    cross_references = False
    name = "stdlib"
    item_id = staticmethod(lambda r: r["id"])
    held_texts = staticmethod(lambda r: [r["docstring"], r["code"]])

    @staticmethod
    def contrastive(items, seed):
        return {"stdlib_doc_code": _pairs(items, INSTRUCTIONS["stdlib"], lambda r: r["docstring"], lambda r: r["code"],
                                          lambda r: r["id"].split(".")[0], seed)}

    @staticmethod
    def generative(items):
        out = []
        for r in items:
            out.append(chat(f"Write a Python function whose docstring is:\n\n{r['docstring']}", r["code"]))
            out.append(chat(f"Write a docstring for this Python function.\n\n{r['code']}", r["docstring"]))
        return out

    @staticmethod
    def evaluation(items):
        return {"stdlib-code-search": dict(kind="retrieval", instruction=INSTRUCTIONS["stdlib"],
                                           queries={r["id"]: r["docstring"] for r in items},
                                           corpus={r["id"]: r["code"] for r in items},
                                           qrels={r["id"]: {r["id"]: 1} for r in items})}


def _labelled(items, text, label, instruction, ident, min_count: int = 20) -> dict:
    """Texts with labels, keeping labels with at least ``min_count`` items (for classification and clustering)."""
    counts = defaultdict(int)
    for r in items:
        counts[label(r)] += 1
    kept = [r for r in items if counts[label(r)] >= min_count]
    return dict(kind="labelled", instruction=instruction, ids=[ident(r) for r in kept],
                texts=[text(r) for r in kept], labels=[label(r) for r in kept])


RECIPES = {recipe.name: recipe for recipe in (Debian, WordNet, FAQ, Stdlib)}
