"""Contract tests run for every Projector subclass, so a new projector is tested without editing this file."""

import inspect

import pytest
import torch

from anymal_lit.catalog import components
from anymal_lit.projectors import Projector

PROJECTORS = components("projectors")


def make(cls: type[Projector], in_dim: int = 24, out_dim: int = 16) -> Projector:
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"in_dim": in_dim, "out_dim": out_dim}
    if "num_heads" in params:
        kwargs["num_heads"] = 4
    if "num_layers" in params:
        kwargs["num_layers"] = 1
    return cls(**kwargs)


def test_every_shipped_projector_is_covered():
    assert {c.__name__ for c in PROJECTORS} >= {"PerceiverResampler", "LinearProjector", "MLPProjector"}


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_output_shape_matches_tokens_per_piece(cls):
    torch.manual_seed(0)
    projector = make(cls)
    for n in (5, 9):
        out = projector(torch.randn(3, n, 24))
        assert out.shape == (3, projector.tokens_per_piece(n), 16)


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_pieces_are_projected_independently(cls):
    torch.manual_seed(0)
    projector = make(cls).eval()
    x = torch.randn(2, 6, 24)
    both = projector(x)
    x2 = x.clone()
    x2[1] += 1.0
    assert torch.allclose(projector(x2)[0], both[0], atol=1e-6)


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_output_rms_matches_target_at_init(cls):
    torch.manual_seed(0)
    projector = make(cls)
    projector.match_output_rms(0.37)
    out = projector(torch.randn(4, 8, 24))
    assert out.pow(2).mean().sqrt().item() == pytest.approx(0.37, rel=0.05)


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_every_parameter_gets_a_gradient(cls):
    projector = make(cls)
    projector(torch.randn(2, 5, 24)).sum().backward()
    assert all(p.grad is not None for p in projector.parameters())


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_wrong_feature_size_is_a_clear_error(cls):
    with pytest.raises(ValueError, match="expects features of size 24"):
        make(cls)(torch.randn(1, 4, 23))


def test_resampler_paper_defaults():
    from anymal_lit.projectors import PerceiverResampler

    resampler = PerceiverResampler(64, 32)
    assert resampler.num_latents == 64 and len(resampler.blocks) == 6
