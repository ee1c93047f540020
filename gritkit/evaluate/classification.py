"""Classification (logistic regression on frozen embeddings) and clustering (k-means V-measure).

Both use the same labelled held-out texts. Classification trains scikit-learn's logistic
regression on a fixed half of the items (chosen by a hash of the item id) and reports accuracy
and macro-F1 on the other half; clustering runs k-means with as many clusters as labels and
reports the V-measure against the labels. The lexical baseline is TF-IDF on the same texts.
"""

from __future__ import annotations

import numpy as np

from ..datasets.common import stable_fraction

SEED = 0


def train_mask(ids: list[str]) -> np.ndarray:
    """True for the items the classifier is fitted on (a fixed half, independent of order)."""
    return np.array([stable_fraction(f"classifier-train:{i}") < 0.5 for i in ids], dtype=bool)


def classify(features, labels: list[str], ids: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of logistic regression trained on half the items, tested on the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    labels = np.asarray(labels)
    fit = train_mask(ids)
    if len(set(labels[fit])) < 2 or fit.all():
        raise ValueError(f"too few labelled items to classify ({len(labels)} items, {len(set(labels))} labels)")
    classifier = LogisticRegression(max_iter=1000, random_state=SEED)
    classifier.fit(features[fit], labels[fit])
    predicted = classifier.predict(features[~fit])
    return {"accuracy": float(accuracy_score(labels[~fit], predicted)),
            "f1_macro": float(f1_score(labels[~fit], predicted, average="macro"))}


def cluster(features, labels: list[str]) -> dict[str, float]:
    """V-measure of k-means (k = number of labels) against the labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    k = len(set(labels))
    assignment = KMeans(n_clusters=k, n_init=3, random_state=SEED).fit_predict(features)
    return {"v_measure": float(v_measure_score(labels, assignment))}


def tfidf_features(texts: list[str]):
    """Sparse L2-normalised TF-IDF vectors (unigrams and bigrams, English stopwords removed)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, stop_words="english", sublinear_tf=True).fit_transform(texts)


def tfidf_for_clustering(texts: list[str], dims: int = 100) -> np.ndarray:
    """TF-IDF reduced by truncated SVD (LSA) and normalised: k-means on raw sparse TF-IDF is poor and slow."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    features = tfidf_features(texts)
    dims = max(2, min(dims, features.shape[1] - 1, features.shape[0] - 1))
    return normalize(TruncatedSVD(n_components=dims, random_state=SEED).fit_transform(features))
