"""Golden loss: a fixed seed, the tiny world and a tiny model give this exact loss; catches silent numeric changes.

If a change alters it on purpose (new init, new template, new world), update GOLDEN and say why in CHANGELOG.md.
"""

import pytest
import torch

from tests.conftest import build_model
from tests.unit.test_anymal_model import batch_of

GOLDEN = 5.225982189178467  # toy world v14 (the test world trains its CLIP with the text tower on the world tokenizer)


def test_golden_alignment_loss(tiny_world):
    torch.manual_seed(0)
    model = build_model(tiny_world).eval()
    with torch.no_grad():
        loss = model(batch_of(model, tiny_world, 4))["loss"].item()
    print(f"golden loss: {loss!r}")
    assert loss == pytest.approx(GOLDEN, rel=1e-4)
