"""Caption metrics exactly as the COCO caption toolkit computes them (pycocoevalcap).

PTB tokenization (Stanford CoreNLP 3.4.1, lower-cased, punctuation removed) of references and predictions, then
BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D (n = 1..4, sigma = 6, x10, document frequencies from the references of
the whole evaluated set). CIDEr is corpus-level: scores of batches must never be averaged, so the metric gathers
every prediction first. SPICE is added when its Stanford CoreNLP 3.6.0 jars are present (it cannot download them
offline).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torchmetrics import Metric

from anymal_lit.metrics.gather import gather_rows

log = logging.getLogger(__name__)


def ptb_tokenize(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """The COCO toolkit's PTB tokenization of every caption of ``groups`` (key -> captions), keys and order kept."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The toolkit feeds one caption per line; an empty caption would shift every later line, so give it a
    # punctuation-only stand-in that the tokenizer's punctuation filter turns back into an empty caption.
    as_input = {k: [{"caption": c if c.strip() else "."} for c in caps] for k, caps in groups.items()}
    return PTBTokenizer().tokenize(as_input)


_meteor: Any = None


def meteor_scorer() -> Any:
    """The toolkit's METEOR 1.5 scorer, one Java process per Python process, started on first use (again if it has
    exited). Each evaluation used to start its own: a JVM start and the paraphrase table's load per caption
    evaluation. METEOR's ``-stdio`` mode keeps no state between ``EVAL`` requests, so the scores are the same."""
    global _meteor
    if _meteor is None or _meteor.meteor_p.poll() is not None:
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor = Meteor()
    return _meteor


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
    tokens = ptb_tokenize(
        {**{f"r{k}": v for k, v in references.items()}, **{f"p{k}": [predictions[k]] for k in references}}
    )
    gts = {k: tokens[f"r{k}"] for k in references}
    res = {k: tokens[f"p{k}"] for k in references}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if with_meteor:
        scores["METEOR"] = float(meteor_scorer().compute_score(gts, res)[0])
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
        return gather_rows(zip(self.ids, self.predictions, self.references))

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        """Scores of already gathered rows (callers that also need the predictions gather once)."""
        if not predictions:
            raise ValueError("CaptionMetric: nothing to score (no update() on any process)")
        return caption_scores(predictions, references, self.with_meteor)

    def compute(self) -> dict[str, float]:
        return self.score(*self.gathered())
