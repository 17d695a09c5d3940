"""The TF-IDF + logistic-regression baseline for classification tasks.

A strong, cheap bag-of-words reference: a multi-task encoder that cannot beat it on a topic task is
not worth serving. Word unigrams (min_df 2) with sublinear TF, LogisticRegression (C=10, lbfgs); multilabel
tasks use one-vs-rest. Deterministic (fixed random_state), a few seconds on BBC.
"""

from __future__ import annotations

from typing import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer

from mtl.data import Example

from .metrics import classification_metrics, multilabel_metrics


def _vectorizer(n_train: int) -> TfidfVectorizer:
    # min_df=2 drops hapaxes on real corpora; tiny training sets keep every term
    return TfidfVectorizer(sublinear_tf=True, min_df=2 if n_train >= 50 else 1)


def tfidf_lr_classifier(n_train: int, *, multilabel: bool = False):
    """The unfitted pipeline: TF-IDF then logistic regression (one-vs-rest when multilabel)."""
    logreg = LogisticRegression(C=10.0, max_iter=2000, random_state=0)
    return make_pipeline(_vectorizer(n_train), OneVsRestClassifier(logreg) if multilabel else logreg)


def tfidf_lr_baseline(train: Sequence[Example], test: Sequence[Example], labels: Sequence[str]) -> dict:
    """Fit on `train`, score on `test`. Single-label when labels are strings, multilabel for lists."""
    x_train, x_test = [e.text for e in train], [e.text for e in test]
    if all(isinstance(e.label, str) for e in train):
        model = tfidf_lr_classifier(len(train))
        model.fit(x_train, [e.label for e in train])
        return classification_metrics([e.label for e in test], list(model.predict(x_test)), labels)
    mlb = MultiLabelBinarizer(classes=list(labels))
    y = mlb.fit_transform([e.label for e in train])
    model = tfidf_lr_classifier(len(train), multilabel=True)
    model.fit(x_train, y)
    pred = [list(row) for row in mlb.inverse_transform(model.predict(x_test))]
    return multilabel_metrics([e.label for e in test], pred, labels)
