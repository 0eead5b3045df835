"""Generation throughput of the evaluation path (batched greedy decoding, left padding, KV cache).

    python benchmarks/eval_throughput.py [--world runs/toyworld] [--records 64]

Measures samples/s of `AnyMALModel.generate` on the toy world's caption val set at batch 1 (what LLaVA's
evaluator runs) and batch 16, and writes runs/bench/eval_throughput.json. Needs `anymal-lit toyworld` first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from anymal_lit import AnyMALModel, CausalLM  # noqa: E402
from anymal_lit.data import ChatTokenizer, PaddingCollator, read_records  # noqa: E402
from anymal_lit.data.collate import ConversationDataset  # noqa: E402
from anymal_lit.encoders import OpenCLIPImageEncoder  # noqa: E402
from anymal_lit.projectors import PerceiverResampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="runs/bench/eval_throughput.json")
    args = parser.parse_args()
    world = Path(args.world)
    torch.manual_seed(0)
    llm = CausalLM(pretrained=str(world / "models/tiny-lm"))
    encoder = OpenCLIPImageEncoder(model_name=f"local-dir:{world / 'models/tiny-clip'}", layer=-3)
    projector = PerceiverResampler(128, 128, num_latents=16, num_layers=2, num_heads=4, num_input_positions=64)
    model = AnyMALModel(llm, {"image": encoder}, {"image": projector}).eval()
    records = read_records(world / "image_caption_val.jsonl", {"image": "<image>"})[: args.records]
    dataset = ConversationDataset(records, ChatTokenizer(llm.tokenizer), model.media_processors(), generation=True)
    samples = [dataset[i] for i in range(len(dataset))]
    collate = PaddingCollator(llm.tokenizer.pad_token_id)
    results = {}
    for batch_size in (1, 16):
        batches = [collate(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
        model.generate(batches[0], max_new_tokens=args.max_new_tokens)  # warm-up
        start = time.perf_counter()
        for batch in batches:
            # a fixed number of new tokens so both settings do the same decoding work
            model.generate(batch, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
        results[f"samples_per_s_batch{batch_size}"] = len(samples) / (time.perf_counter() - start)
    results["speedup_batch16_vs_batch1"] = results["samples_per_s_batch16"] / results["samples_per_s_batch1"]
    results.update({"records": len(samples), "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
