import inspect
import json
import math
import shutil

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from anymal_lit.data import ImageTextDataModule, PreferenceDataModule, RecordError
from anymal_lit.losses import IGNORE_INDEX, dpo_loss, sequence_logps
from anymal_lit.models.lora import REFERENCE_ADAPTER, LoRASettings
from anymal_lit.stages import AlignmentStage, DPOStage, SFTStage
from anymal_lit.stages.optimization import OptimizerSettings, lr_multiplier
from tests.conftest import build_random_model
from tests.unit.test_anymal_model import batch_of


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-12.0, -3.5, -40.0])
    other = torch.tensor([-10.0, -7.0, -39.0])
    for eps in (0.0, 0.05):
        losses, chosen, rejected = dpo_loss(logps, other, logps, other, beta=0.1, label_smoothing=eps)
        assert torch.allclose(losses, torch.full((3,), math.log(2)))
        assert torch.equal(chosen, torch.zeros(3)) and torch.equal(rejected, torch.zeros(3))


def test_dpo_loss_matches_the_cdpo_formula():
    pc, pr, rc, rr = (torch.tensor([v], requires_grad=True) for v in (-5.0, -9.0, -6.0, -8.0))
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.05)
    h = (-5 + 9) - (-6 + 8)
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = -(0.95) * math.log(sig(0.5 * h)) - 0.05 * math.log(sig(-0.5 * h))
    assert losses.item() == pytest.approx(expected)
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    assert not chosen.requires_grad and losses.requires_grad


def trainer(tmp_path, steps):
    return L.Trainer(
        max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def align_export(tmp_path_factory, image_data):
    tmp = tmp_path_factory.mktemp("align")
    torch.manual_seed(0)
    stage = AlignmentStage(build_random_model(), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1))
    dm = ImageTextDataModule(train_file=str(image_data / "image_caption_train.jsonl"), batch_size=4)
    trainer(tmp, 2).fit(stage, dm)
    return tmp / "ckpt" / "export"


@pytest.fixture(scope="module")
def sft_export(tmp_path_factory, image_data, align_export):
    tmp = tmp_path_factory.mktemp("sft")
    torch.manual_seed(1)
    stage = SFTStage(
        build_random_model(), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1), init_from=str(align_export)
    )
    dm = ImageTextDataModule(train_file=str(image_data / "image_caption_train.jsonl"), batch_size=4)
    trainer(tmp, 2).fit(stage, dm)
    return tmp / "ckpt" / "export"


def test_sft_starts_from_the_alignment_export_and_trains_only_projectors_and_lora(tmp_path, image_data, align_export):
    torch.manual_seed(7)
    stage = SFTStage(
        build_random_model(), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1), init_from=str(align_export)
    )
    from safetensors.torch import load_file

    exported = load_file(str(align_export / "trainable.safetensors"))
    own = dict(stage.model.named_parameters())
    assert exported and all(torch.equal(own[k], v) for k, v in exported.items())  # bit for bit
    trainable = {n for n, p in stage.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and all("lora_" in n or n.startswith("projectors.") for n in trainable)
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    dm = ImageTextDataModule(train_file=str(image_data / "image_caption_train.jsonl"), batch_size=4)
    trainer(tmp_path, 2).fit(stage, dm)
    after = stage.model.state_dict()
    for key, value in before.items():
        if "lora_" in key or key.startswith("projectors."):
            continue
        assert torch.equal(value, after[key]), f"frozen tensor changed: {key}"
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
    assert (tmp_path / "ckpt/export/lora/adapter_model.safetensors").is_file()


def test_a_stage_refuses_an_export_whose_lora_settings_differ(image_data, sft_export):
    """Another alpha loads without a shape error but rescales every adapter: the stage says which setting to change."""
    assert json.loads((sft_export / "export.json").read_text())["lora"]["alpha"] == 32
    with pytest.raises(ValueError, match=r"export: its LoRA adapters .* lora.alpha: 32 \(this stage: 16\)"):
        DPOStage(build_random_model(), init_from=str(sft_export), lora=LoRASettings(alpha=16))
    with pytest.raises(ValueError, match=r"lora.r: 8 \(this stage: 4\)"):
        SFTStage(build_random_model(), init_from=str(sft_export / "trainable.safetensors"), lora=LoRASettings(r=4))
    DPOStage(build_random_model(), init_from=str(sft_export))  # the same settings load


def test_a_broken_export_json_is_named(tmp_path, image_data, sft_export):
    broken = tmp_path / "export"
    shutil.copytree(sft_export, broken)
    (broken / "export.json").write_text('{"stage": "sft",')
    with pytest.raises(ValueError, match=r"export/export.json: not valid JSON"):
        DPOStage(build_random_model(), init_from=str(broken))


def test_neftune_noises_text_embeddings_in_training_only_never_the_media_tokens(image_data):
    """SFT's NEFTune: in training, every text embedding gets U(-1, 1) * alpha / sqrt(L * d) noise (L: the row's text
    tokens); the projected media tokens and the padding get none; in evaluation nothing is noised."""
    torch.manual_seed(0)
    stage = SFTStage(build_random_model(), neftune_alpha=10.0)
    model = stage.model
    batch = batch_of(model, image_data, 3)
    placeholder = model.llm.placeholder_ids["image"]
    k = model.projectors["image"].num_latents
    d = model.llm.hidden_size
    stage.eval()
    clean = model.splice(batch).inputs_embeds
    assert torch.equal(model.splice(batch).inputs_embeds, clean)  # no noise outside training
    stage.train()
    noisy = model.splice(batch).inputs_embeds
    for r in range(3):
        text = int(batch["attention_mask"][r].sum())
        pos = int((batch["input_ids"][r] == placeholder).nonzero())
        media = slice(pos, pos + k)
        assert torch.equal(noisy[r, media], clean[r, media])  # media tokens: no noise
        assert torch.equal(noisy[r, text + k - 1 :], clean[r, text + k - 1 :])  # padding: none
        rows = torch.cat(
            [noisy[r, :pos] - clean[r, :pos], noisy[r, pos + k : text + k - 1] - clean[r, pos + k : text + k - 1]]
        )
        bound = 10.0 / math.sqrt(text * d)
        assert (rows.abs() > 0).float().mean() > 0.99  # every text position is noised
        assert 0.95 * bound < rows.abs().max() <= bound * (1 + 1e-5)  # at the promised scale
    stage.eval()
    assert torch.equal(model.splice(batch).inputs_embeds, clean)


def preference_file(world, tmp_path, bad=None):
    rows = []
    for line in (world / "image_caption_val.jsonl").read_text().splitlines()[:8]:
        rec = json.loads(line)
        caption = rec["conversations"][-1]["value"]
        wrong = caption + " and a big red cross"  # a hallucinated object
        rows.append({"id": rec["id"], "image": str(world / rec["image"]), "conversations": rec["conversations"][:1],
                     "chosen": caption, "rejected": wrong})  # fmt: skip
    if bad:
        rows[0].update(bad)
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.parametrize("reference", ["adapter", "precomputed"])
def test_dpo_starts_at_log2_and_keeps_the_reference_frozen(tmp_path, image_data, sft_export, reference):
    torch.manual_seed(3)
    stage = DPOStage(build_random_model(), optimizer=OptimizerSettings(lr=1e-2, warmup_steps=1),
                     init_from=str(sft_export), label_smoothing=0.0, reference=reference)  # fmt: skip
    dm = PreferenceDataModule(train_file=str(preference_file(image_data, tmp_path)), batch_size=4)
    stage.model.llm.model.eval()
    losses = []
    original = stage._dpo_step

    def record(batch, split):
        loss = original(batch, split)
        losses.append(loss.item())
        return loss

    stage._dpo_step = record
    ref_before = {n: p.clone() for n, p in stage.model.llm.model.named_parameters() if f".{REFERENCE_ADAPTER}." in n}
    trainer(tmp_path, 3).fit(stage, dm)
    # first step: policy == reference (LoRA dropout aside), so the loss is log 2
    assert losses[0] == pytest.approx(math.log(2), abs=2e-2)
    assert len(losses) == 3
    for name, value in ref_before.items():
        assert torch.equal(value, dict(stage.model.llm.model.named_parameters())[name])
    if reference == "precomputed":
        assert (tmp_path / "ckpt/export/reference_logps.json").is_file()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"chosen": ""}, "empty or missing 'chosen'"),
        ({"rejected": None}, "'rejected'"),
        ({"rejected": "same", "chosen": "same"}, "identical"),
        ({"chosen": "a red circle <image>"}, "holds the placeholder <image>"),
    ],
)
def test_bad_preference_records(tmp_path, image_data, bad, message):
    dm = PreferenceDataModule(train_file=str(preference_file(image_data, tmp_path, bad)))
    with pytest.raises(RecordError, match=message):
        dm.preference_records(dm.files["train"])
    skipping = PreferenceDataModule(train_file=str(preference_file(image_data, tmp_path, bad)), skip_bad_records=True)
    assert len(skipping.preference_records(skipping.files["train"])) == 7


def test_dpo_schedule_warms_up_then_decays_linearly_to_two_thirds():
    """DPOStage's default is the paper's DPO recipe (appendix E.3): lr 1e-5, 20 warm-up steps, linear to 2/3."""
    settings = inspect.signature(DPOStage).parameters["optimizer"].default
    assert settings.lr == 1e-5
    assert lr_multiplier(0, 120, settings) == pytest.approx(1 / 20)
    assert lr_multiplier(19, 120, settings) == pytest.approx(1.0)
    assert lr_multiplier(70, 120, settings) == pytest.approx(1 - (1 / 3) * 0.5)
    assert lr_multiplier(120, 120, settings) == pytest.approx(2 / 3)


def test_rpo_alpha_adds_the_chosen_replies_mean_next_token_loss(tmp_path, image_data, sft_export):
    torch.manual_seed(3)
    stage = DPOStage(build_random_model(), init_from=str(sft_export), rpo_alpha=0.5)
    stage.eval()  # no LoRA dropout: the two losses below see the same forward
    logged = {}
    stage.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    dm = PreferenceDataModule(train_file=str(preference_file(image_data, tmp_path)), batch_size=4, num_workers=0)
    dm.bind(stage.model.llm.tokenizer, stage.model.media_processors(), stage._placeholders())
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        with_rpo = stage._dpo_step(batch, "val")
        out = stage.model(batch, pack=False)
        n = batch["num_pairs"]
        chosen_labels = out["labels"][:n, 1:]
        chosen_logps = sequence_logps(out["logits"][:n], out["labels"][:n])
        mean_token_nll = -chosen_logps.sum() / (chosen_labels != IGNORE_INDEX).sum()
        stage.rpo_alpha = 0.0
        plain = stage._dpo_step(batch, "val")
    assert logged["val/nll_chosen"] == pytest.approx(mean_token_nll.item(), rel=1e-5)
    assert with_rpo.item() == pytest.approx(plain.item() + 0.5 * mean_token_nll.item(), rel=1e-5)
    with pytest.raises(ValueError, match="rpo_alpha"):
        DPOStage(build_random_model(), rpo_alpha=-1.0)
