"""Caption metrics exactly as the COCO caption toolkit computes them (pycocoevalcap).

PTB tokenization (Stanford CoreNLP 3.4.1, lower-cased, punctuation removed) of references and predictions, then
BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D (n = 1..4, sigma = 6, x10, document frequencies from the references of
the whole evaluated set). CIDEr is corpus-level: scores of batches must never be averaged, so the metric gathers
every prediction first. SPICE is added when its Stanford CoreNLP 3.6.0 jars are present (it cannot download them
offline).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torchmetrics import Metric

from anymal_lit.collectives import gather_objects

log = logging.getLogger(__name__)


def _ptb_tokenize(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The toolkit feeds one caption per line; an empty caption would shift every later line, so give it a
    # punctuation-only stand-in that the tokenizer's punctuation filter turns back into an empty caption.
    as_input = {k: [{"caption": c if c.strip() else "."} for c in caps] for k, caps in groups.items()}
    return PTBTokenizer().tokenize(as_input)


def spice_available() -> bool:
    import pycocoevalcap.spice as spice

    return any((Path(spice.__file__).parent / "lib").glob("stanford-corenlp-3.6.0*.jar"))


def caption_scores(
    predictions: dict[str, str], references: dict[str, list[str]], with_meteor: bool = True
) -> dict[str, float]:
    """All COCO caption scores of ``predictions`` (id -> caption) against ``references`` (id -> captions)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"{len(missing)} images have references but no prediction, e.g. {missing[:3]}")
    unknown = sorted(set(predictions) - set(references))
    if unknown:
        raise ValueError(f"{len(unknown)} predictions have no references, e.g. {unknown[:3]}")
    empty_refs = [k for k, refs in references.items() if not refs]
    if empty_refs:
        raise ValueError(f"images without reference captions, e.g. {empty_refs[:3]}")
    # one tokenizer run for both sides (the toolkit runs it twice; tokenization is per caption, so equal)
    tokens = _ptb_tokenize(
        {**{f"r{k}": v for k, v in references.items()}, **{f"p{k}": [predictions[k]] for k in references}}
    )
    gts = {k: tokens[f"r{k}"] for k in references}
    res = {k: tokens[f"p{k}"] for k in references}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if with_meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if spice_available():
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    return scores


def cider_score(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """COCO caption scores: ``CIDEr`` (CIDEr-D), ``Bleu_4`` (and 1-3), ``METEOR``, ``ROUGE_L`` (``SPICE`` if its jars
    are installed), computed the way the COCO caption toolkit does.

    Args:
        predictions: Image id -> generated caption.
        references: Image id -> human reference captions (every id must have a prediction).
    """
    return caption_scores(predictions, references)


def best_constant_cider(candidates: list[str], references: dict[str, list[str]]) -> tuple[float, str]:
    """The best CIDEr any single caption reaches when predicted for every image (a baseline a model must beat)."""
    tokens = _ptb_tokenize({**{f"r{k}": v for k, v in references.items()}, "candidates": candidates})
    score = constant_cider_scorer([tokens[f"r{k}"] for k in references])
    return max((score(tok), raw) for raw, tok in zip(candidates, tokens["candidates"]))


def constant_cider_scorer(references: list[list[str]], n: int = 4, sigma: float = 6.0) -> Callable[[str], float]:
    """``score(caption)``: the corpus CIDEr-D of predicting one (PTB-tokenized) caption for every image.

    Equals pycocoevalcap's ``Cider().compute_score`` on ``{i: [caption]}`` to the last bit (the same operations in
    the same order), but the document frequencies and every reference's tf-idf vector are computed once instead of
    once per candidate (pycocoevalcap's ``counts2vec``/``sim`` are closures inside ``compute_cider``, so they are
    restated here): the toy world's 300 image candidates against 1000 references went from 38 s to 13 s.
    """
    from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_refs, cook_test

    scorer = CiderScorer(n=n, sigma=sigma)
    scorer.crefs = [cook_refs(refs, n) for refs in references]
    scorer.compute_doc_freq()
    ref_len = np.log(float(len(scorer.crefs)))
    doc_freq = scorer.document_frequency

    def tfidf(counts: dict) -> tuple[list[dict], list[float], int]:  # pycocoevalcap's counts2vec
        vec: list[dict] = [defaultdict(float) for _ in range(n)]
        norm, length = [0.0] * n, 0
        for ngram, term_freq in counts.items():
            k = len(ngram) - 1
            vec[k][ngram] = float(term_freq) * (ref_len - np.log(max(1.0, doc_freq[ngram])))
            norm[k] += pow(vec[k][ngram], 2)
            if k == 1:
                length += term_freq
        return vec, [np.sqrt(v) for v in norm], length

    def similarity(hyp: tuple, ref: tuple) -> np.ndarray:  # pycocoevalcap's sim
        (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
        delta = float(len_h - len_r)
        val = np.array([0.0 for _ in range(n)])
        for k in range(n):
            for ngram, weight in vec_h[k].items():
                ref_weight = vec_r[k].get(ngram, 0.0)  # .get: the shared reference vectors must not grow per candidate
                val[k] += min(weight, ref_weight) * ref_weight
            if norm_h[k] != 0 and norm_r[k] != 0:
                val[k] /= norm_h[k] * norm_r[k]
            val[k] *= np.e ** (-(delta**2) / (2 * sigma**2))
        return val

    ref_vectors = [[tfidf(ref) for ref in refs] for refs in scorer.crefs]

    def score(caption: str) -> float:
        hyp = tfidf(cook_test(caption, n))
        per_image = []
        for refs in ref_vectors:
            total = np.array([0.0 for _ in range(n)])
            for ref in refs:
                total += similarity(hyp, ref)
            per_image.append(np.mean(total) / len(refs) * 10.0)
        return float(np.mean(np.array(per_image)))

    return score


class CaptionMetric(Metric):
    """torchmetrics wrapper of :func:`caption_scores` that is correct across processes.

    ``update`` only stores strings; ``compute`` gathers them from every rank with ``all_gather_object`` (list-of-
    string states are not synced by torchmetrics), drops duplicates of an id (distributed samplers pad the last
    batch) and scores the whole set once, so the corpus-level CIDEr equals a single-process run.

    Args:
        with_meteor: Also compute METEOR (starts a Java process; ~2 s).
    """

    full_state_update = False

    def __init__(self, with_meteor: bool = True, **kwargs: Any) -> None:
        super().__init__(sync_on_compute=False, **kwargs)
        self.with_meteor = with_meteor
        self.add_state("ids", default=[], dist_reduce_fx=None)
        self.add_state("predictions", default=[], dist_reduce_fx=None)
        self.add_state("references", default=[], dist_reduce_fx=None)

    def update(self, ids: list[str], predictions: list[str], references: list[list[str]]) -> None:
        if not len(ids) == len(predictions) == len(references):
            raise ValueError("ids, predictions and references must have the same length")
        self.ids.extend(str(i) for i in ids)
        self.predictions.extend(predictions)
        self.references.extend(list(r) for r in references)

    def gathered(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        rows = gather_objects(list(zip(self.ids, self.predictions, self.references)))
        predictions, references = {}, {}
        for rid, pred, refs in rows:
            predictions.setdefault(rid, pred)
            references.setdefault(rid, refs)
        return predictions, references

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        """Scores of already gathered rows (callers that also need the predictions gather once)."""
        if not predictions:
            raise ValueError("CaptionMetric: nothing to score (no update() on any process)")
        return caption_scores(predictions, references, self.with_meteor)

    def compute(self) -> dict[str, float]:
        return self.score(*self.gathered())
