"""Bundle vs training model: are the generations token for token the same?

    python benchmarks/bundle_parity.py [--export runs/demo/dpo/checkpoints/export] [--world runs/toyworld]

Loads the stage export (the model as training left it), writes two bundles from it (`anymal-lit export`, LoRA
beside the base and LoRA merged), copies each to another folder, loads it from there and generates greedily for
100 toy-world records (VQA questions, captions of image, audio, video and IMU, interleaved image + IMU
questions, MMBench items). Counts the records whose generated
token ids are identical to the export's and writes runs/bench/bundle_parity.json. Needs `make demo` (or any export
of a model trained on the toy world).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from anymal_lit.data.datamodule import ConversationDataModule  # noqa: E402
from anymal_lit.inference import load_model  # noqa: E402
from anymal_lit.inference.bundle import export_bundle  # noqa: E402
from anymal_lit.inference.chat import placeholders  # noqa: E402

SETS = (("image_vqa_val.jsonl", 40), ("image_caption_val.jsonl", 12), ("audio_caption_val.jsonl", 12),
        ("video_caption_val.jsonl", 12), ("imu_caption_val.jsonl", 12), ("interleaved_val.jsonl", 12),
        ("image_mmbench_val.jsonl", 100))  # fmt: skip
"""(file, most records taken from it), in order, until ``--records`` are reached (smaller worlds have fewer)."""


@torch.no_grad()
def generated_ids(model, world: Path, max_new_tokens: int, records: int = 100) -> dict[str, list[int]]:
    """Record id -> greedy token ids, batched as the evaluation callbacks batch (left padding, batch 8)."""
    data = ConversationDataModule()
    data.bind(model.llm.tokenizer, model.media_processors(), placeholders(model))
    out: dict[str, list[int]] = {}
    tokenizer = model.llm.tokenizer
    for name, limit in SETS:
        seen = 0
        for batch in data.dataloader(str(world / name), 8, generation=True):
            inputs = model.splice(batch, padding_side="left")
            ids = model.llm.model.generate(
                inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, do_sample=False,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
            for rid, row in zip(batch["ids"], ids.tolist()):
                out[f"{name}:{rid}"] = row
            seen += len(batch["ids"])
            if seen >= limit or len(out) >= records:
                break
        if len(out) >= records:
            break
    return dict(list(out.items())[:records])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", default="runs/demo/dpo/checkpoints/export")
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--out", default="runs/bench/bundle_parity.json")
    args = parser.parse_args()
    world = Path(args.world)
    reference = generated_ids(load_model(args.export), world, args.max_new_tokens, args.records)
    results = {"export": args.export, "records": len(reference)}
    for merge in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            bundle = export_bundle(args.export, Path(tmp) / "bundle", merge_lora=merge)
            moved = shutil.copytree(bundle, Path(tmp) / "moved" / "bundle")
            shutil.rmtree(bundle)
            got = generated_ids(load_model(moved), world, args.max_new_tokens, args.records)
        same = sum(got[k] == v for k, v in reference.items())
        results["merged" if merge else "adapter"] = {"identical": same, "of": len(reference)}
        print(f"bundle ({'LoRA merged' if merge else 'LoRA adapter'}): {same}/{len(reference)} token-identical")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
