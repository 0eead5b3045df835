"""Projector behaviour: contract tests run for every Projector subclass (a new projector is tested without editing
this file), then what each projector promises on its own."""

import inspect

import pytest
import torch

from anymal_lit.catalog import components
from anymal_lit.projectors import LinearProjector, MLPProjector, PerceiverResampler, Projector

PROJECTORS = components("projectors")


def make(cls: type[Projector], in_dim: int = 24, out_dim: int = 16, **kwargs) -> Projector:
    params = inspect.signature(cls.__init__).parameters
    defaults = {"num_heads": 4, "num_layers": 1}
    kwargs = {**{k: v for k, v in defaults.items() if k in params}, **kwargs}
    return cls(in_dim=in_dim, out_dim=out_dim, **kwargs)


def test_every_shipped_projector_is_covered():
    assert {c.__name__ for c in PROJECTORS} >= {"PerceiverResampler", "LinearProjector", "MLPProjector"}


CONFIGS = [
    (LinearProjector, {}, {5: 5, 9: 9}),  # one LLM token per encoder token
    (LinearProjector, {"num_tokens": 3}, {5: 3, 9: 3, 3: 3}),  # pooled to a fixed count
    (MLPProjector, {}, {5: 5, 9: 9}),
    (MLPProjector, {"num_tokens": 4, "hidden_dim": 40}, {5: 4, 9: 4}),
    (PerceiverResampler, {"num_latents": 6}, {5: 6, 9: 6}),
    (PerceiverResampler, {"num_latents": 2, "dim": 32, "num_layers": 2, "num_input_positions": 9}, {5: 2, 9: 2}),
]


@pytest.mark.parametrize(("cls", "kwargs", "tokens"), CONFIGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_output_shape_for_each_config(cls, kwargs, tokens):
    torch.manual_seed(0)
    projector = make(cls, **kwargs)
    for n, k in tokens.items():
        assert projector.tokens_per_piece(n) == k
        assert projector(torch.randn(3, n, 24)).shape == (3, k, 16)


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_pieces_are_projected_independently(cls):
    torch.manual_seed(0)
    projector = make(cls).eval()
    x = torch.randn(2, 6, 24)
    both = projector(x)
    x2 = x.clone()
    x2[1] += torch.randn(6, 24)  # random: a constant shift of a token is invisible after a LayerNorm
    assert torch.allclose(projector(x2)[0], both[0], atol=1e-6)
    assert not torch.allclose(projector(x2)[1], both[1], atol=1e-3)


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_every_parameter_is_trained_by_a_loss_on_the_output(cls):
    """Every parameter gets a non-zero gradient from a loss on the projected tokens (a sum of LayerNorm outputs would
    give the layers before the norm an exactly zero gradient, so the loss here is a regression to random targets)."""
    torch.manual_seed(0)
    projector = make(cls, num_input_positions=5) if cls is PerceiverResampler else make(cls)
    out = projector(torch.randn(2, 5, 24))
    torch.nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    for name, param in projector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_wrong_feature_size_is_a_clear_error(cls):
    with pytest.raises(ValueError, match="expects features of size 24"):
        make(cls)(torch.randn(1, 4, 23))


@pytest.mark.parametrize("cls", PROJECTORS, ids=lambda c: c.__name__)
def test_output_has_the_llm_embedding_scale_it_is_initialised_for(cls):
    """In an AnyMALModel, each projected token has the RMS of the LLM's token embedding matrix at init (measured here
    from the matrix itself); without the matching it would have LayerNorm's unit RMS, ~40x too loud for this LLM."""
    from anymal_lit import AnyMALModel
    from tests.conftest import FeatureEncoder, random_llm

    torch.manual_seed(0)
    llm = random_llm(initializer_range=0.02)
    target = llm.model.get_input_embeddings().weight.pow(2).mean().sqrt().item()
    assert target < 0.05  # far from the unit scale a bare LayerNorm gives
    for match, expected in ((True, target), (False, 1.0)):
        projector = make(cls, 24, llm.hidden_size)
        model = AnyMALModel(llm, {"image": FeatureEncoder(24)}, {"image": projector}, match_embedding_rms=match)
        tokens = model.project_media({"image": {"pieces": torch.randn(3, 7, 24), "counts": torch.tensor([1, 2])}})
        per_token = torch.cat(tokens["image"]).pow(2).mean(-1).sqrt()
        assert per_token.numel() == 3 * projector.tokens_per_piece(7)
        assert torch.allclose(per_token, torch.full_like(per_token, expected), rtol=0.02), (match, per_token)


def test_resampler_output_depends_on_every_input_position():
    """Each latent attends over all encoder tokens: changing any one token changes every output token, and with
    learned input positions the same tokens in another order give another output."""
    torch.manual_seed(0)
    for positions in (None, 7):
        resampler = make(PerceiverResampler, num_latents=3, num_layers=2, num_input_positions=positions).eval()
        x = torch.randn(1, 7, 24)
        base = resampler(x)
        for i in range(7):
            moved = x.clone()
            moved[0, i] += torch.randn(24)
            change = (resampler(moved) - base).abs().amax(-1)  # per output token
            assert (change > 1e-4).all(), (positions, i, change)
        shuffled = resampler(x[:, torch.randperm(7)])
        assert torch.allclose(shuffled, base, atol=1e-5) == (positions is None)  # order-blind only without positions


def test_resampler_output_is_set_by_its_latents():
    """The latents are the queries: other latents give other tokens from the same features, and the k-th output token
    comes from the k-th latent (swapping two latents swaps those output tokens)."""
    torch.manual_seed(0)
    resampler = make(PerceiverResampler, num_latents=4, num_layers=2).eval()
    x = torch.randn(2, 5, 24)
    base = resampler(x)
    with torch.no_grad():
        resampler.latents[[0, 2]] = resampler.latents[[2, 0]].clone()
    swapped = resampler(x)
    assert torch.allclose(swapped[:, [2, 1, 0, 3]], base, atol=1e-5)
    with torch.no_grad():
        resampler.latents.add_(torch.randn_like(resampler.latents))
    assert not torch.allclose(resampler(x), swapped, atol=1e-3)


def test_resampler_input_positions_cover_at_most_their_count():
    resampler = make(PerceiverResampler, num_latents=2, num_input_positions=4)
    resampler(torch.randn(1, 4, 24))
    with pytest.raises(ValueError, match="5 encoder tokens but only 4 input positions"):
        resampler(torch.randn(1, 5, 24))


@pytest.mark.parametrize("cls", [LinearProjector, MLPProjector])
def test_pooled_linear_projectors_map_each_window_of_tokens_to_its_own_output_token(cls):
    """``num_tokens=3`` over 9 encoder tokens: output token j depends on input tokens 3j..3j+2 only, and without
    ``num_tokens`` each output token is the map of its own input token."""
    torch.manual_seed(0)
    for num_tokens, window in ((3, 3), (None, 1)):
        projector = make(cls, num_tokens=num_tokens).eval()
        x = torch.randn(1, 9, 24)
        base = projector(x)
        for i in range(9):
            moved = x.clone()
            moved[0, i] += torch.randn(24)
            changed = ((projector(moved) - base).abs().amax(-1) > 1e-5)[0]
            assert changed.nonzero().flatten().tolist() == [i // window], (num_tokens, i)
