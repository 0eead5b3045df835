"""Training-step throughput on a ~50M-parameter LLM: packing vs padding, feature cache vs live encoders, FLOP/s.

    python benchmarks/train_throughput.py [--world runs/toyworld] [--steps 12]     (make bench)

One run measures, on the same model and the toy world's four-modality caption mixture (alignment step: projectors
train, LLM and encoders frozen):

* samples/s and tokens/s of a training step with padding vs packing, live encoders vs the frozen-feature cache;
* token utilisation = real tokens / tokens the LLM processes (padding wastes the rest);
* achieved FLOP/s of a training step (counted by ``torch.utils.flop_counter``) as a fraction of this machine's
  measured fp32 matmul FLOP/s;
* in one process on the same batches, steps interleaved (so machine load hits all alike): packed vs padded FLOP/s
  (``packed_vs_padded_flops_ratio``, packed attention as ``auto`` chooses: per-sample attention through torch's CPU
  flash kernels on CPU; ``packed_mask_vs_padded_flops_ratio`` with the dense block-diagonal mask instead; the same
  with one 1024-token pack per batch, ``packed_long_*``, where the dense mask pays attention over the whole pack;
  ``*_by_round``: each timed round's ratio, the spread within a run; the comparison runs ``--compare-runs`` times,
  each in a new process, and reports the run with the median packed / padded ratio, with every run's ratios as
  ``*_by_run``: one run's ratio can sit anywhere in a spread of several percent) and a bf16-mixed packed step
  (``torch.autocast`` bfloat16) vs fp32, with its FLOP/s as a fraction of the measured bf16 matmul peak (``bf16_*``).
  The LLM's attention time per step, forward and backward, of each variant (``attention_ms_per_step``) shows
  what the packed attention kernel itself costs in the step.
  FLOPs are what ``torch.utils.flop_counter`` counts: its registry has no formula for CPU flash attention, so on CPU
  they are the matmuls outside attention, over every token a variant processes (a padded step's padding included);
* peak resident memory of each configuration (each runs in its own process);
* per-rank parameter and optimizer bytes under DDP vs FSDP (2 processes, gloo).

Writes ``runs/bench/results.json`` and ``runs/bench/results.md``. Needs ``anymal-lit toyworld`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "audio", "video", "imu")
LLM = {"hidden_size": 640, "intermediate_size": 1920, "num_hidden_layers": 10, "num_attention_heads": 10}


def build_model(world: Path, packing_length: int | None, encoders: str = "tiny"):
    """The benchmark model. ``encoders="tiny"``: the toy world's tiny towers (cheap, so a feature cache saves little);
    ``"vit-b-16"``: images and video frames through an open_clip ViT-B/16 at 224 px (randomly initialised: the cost
    of a real frozen encoder, the paper's are larger still), audio and IMU as in the toy world."""
    from anymal_lit import AnyMALModel, CausalLM
    from anymal_lit.encoders import ClapAudioEncoder, IMUEncoder, OpenCLIPImageEncoder, OpenCLIPVideoEncoder
    from anymal_lit.projectors import LinearProjector, PerceiverResampler

    torch.manual_seed(0)
    tokenizer = str(world / "models/tiny-lm")
    config = {"model_type": "llama", "vocab_size": 1000, "max_position_embeddings": 1024, **LLM}
    llm = CausalLM(config=config, tokenizer=tokenizer)
    clip = f"local-dir:{world / 'models/tiny-clip'}" if encoders == "tiny" else "ViT-B-16"
    vision = {
        "image": OpenCLIPImageEncoder(model_name=clip, layer=-3),
        "video": OpenCLIPVideoEncoder(model_name=clip, layer=-3, frames_per_clip=4),
    }
    encoders = {
        "image": vision["image"],
        "audio": ClapAudioEncoder(pretrained=str(world / "models/tiny-clap")),
        "video": vision["video"],
        "imu": IMUEncoder(pretrained=str(world / "models/tiny-imu")),
    }
    h, dim = llm.hidden_size, encoders["image"].output_dim
    patches = (encoders["image"].resolution // (16 if clip == "ViT-B-16" else 8)) ** 2
    resampler = dict(num_latents=16, num_layers=2, num_heads=4)
    projectors = {
        "image": PerceiverResampler(dim, h, num_input_positions=patches, **resampler),
        "audio": LinearProjector(encoders["audio"].output_dim, h),
        "video": PerceiverResampler(dim, h, num_input_positions=4 * patches, **resampler),
        "imu": LinearProjector(encoders["imu"].output_dim, h),
    }
    return AnyMALModel(llm, encoders, projectors, packing_length=packing_length)


def mixture(world: Path, model, cache_dir: str | None, batch_size: int, count: int):
    from anymal_lit.data import (
        AudioTextDataModule,
        ImageTextDataModule,
        IMUTextDataModule,
        MixtureDataModule,
        VideoTextDataModule,
    )

    kinds = {
        "image": ImageTextDataModule,
        "audio": AudioTextDataModule,
        "video": VideoTextDataModule,
        "imu": IMUTextDataModule,
    }
    modules = {
        m: cls(train_file=str(world / f"{m}_caption_train.jsonl"), feature_cache=cache_dir) for m, cls in kinds.items()
    }
    data = MixtureDataModule(modules, batch_size=batch_size, samples_per_epoch=batch_size * count, seed=0)
    placeholders = {m: f"<{m}>" for m in MODALITIES}
    data.bind(model.llm.tokenizer, model.media_processors(), placeholders, dict(model.encoders))
    return data


def batches(world: Path, model, cache_dir: str | None, batch_size: int, count: int) -> list[dict]:
    return list(mixture(world, model, cache_dir, batch_size, count).train_dataloader())


def fill_cache(world: Path, model, cache_dir: str, batch_size: int, count: int) -> None:
    """Run the frozen encoders once over the media the timed batches use (what ``anymal-lit cache-features`` does
    for a whole dataset)."""
    from bisect import bisect_right

    from anymal_lit.data.feature_cache import FeatureCache

    loader = mixture(world, model, None, batch_size, count).train_dataloader()
    parts, ends = loader.dataset.datasets, loader.dataset.cumulative_sizes
    files: dict[str, list[str]] = {}
    for index in loader.sampler:
        d = bisect_right(ends, index)
        record = parts[d].records[index - (ends[d - 1] if d else 0)]
        for modality, path in record.media:
            files.setdefault(modality, []).append(path)
    cache = FeatureCache(cache_dir)
    for modality, paths in files.items():
        cache.fill(modality, model.encoders[modality], sorted(set(paths)))


def run_config(
    world: Path,
    packed: bool,
    cached: bool,
    steps: int,
    batch_size: int,
    cache_dir: str,
    packing_length: int,
    encoders: str = "tiny",
) -> dict:
    """One configuration in this process: time ``steps`` alignment steps after 2 warm-up steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from anymal_lit.models.packing import pack_rows

    model = build_model(world, packing_length=packing_length if packed else None, encoders=encoders)
    model.requires_grad_(False)
    model.projectors.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    load_start = time.perf_counter()
    data = batches(world, model, cache_dir if cached else None, batch_size, steps + 2)
    load_s = time.perf_counter() - load_start

    def step(batch: dict) -> None:
        loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for batch in data[:2]:
        step(batch)
    with FlopCounterMode(display=False) as counter:
        step(data[2])
    flops_per_step = counter.get_total_flops()
    real = processed = samples = 0
    start = time.perf_counter()
    for batch in data[2:]:
        step(batch)
    train_s = time.perf_counter() - start
    for batch in data[2:]:  # token accounting (outside the timed loop)
        with torch.no_grad():
            rows_e, _ = model.splice_rows(batch)
        lengths = [r.shape[0] for r in rows_e]
        real += sum(lengths)
        samples += len(lengths)
        if packed:
            packs = pack_rows(rows_e, None, packing_length)
            processed += packs.segments.numel()
        else:
            processed += len(lengths) * max(lengths)
    timed = len(data) - 2
    # data loading (file decoding + live encoding happens in the model) is part of a real step: count it per step
    per_step_s = train_s / timed + load_s / len(data)
    return {
        "samples_per_s": samples / (per_step_s * timed),
        "tokens_per_s": real / (per_step_s * timed),
        "token_utilization": real / processed,
        "step_s": per_step_s,
        "flops_per_step": flops_per_step,
        "achieved_flops_per_s": flops_per_step / (train_s / timed),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


class AttentionClock:
    """Wall time an LLM spends in attention, forward and backward: :meth:`install` wraps its attention function so
    that each call sits between two identity autograd functions, and the backward pass's time from the output's
    gradient arriving to the inputs' gradients leaving is counted as well (on CPU the autograd engine runs one node at
    a time, on the calling thread, in reverse order of creation)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.started: list[float] = []

    def install(self, llm) -> None:
        """Wrap the attention implementation of the transformers model ``llm`` (an ``anymal_packed_*`` one)."""
        from transformers import AttentionInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        name = llm.config._attn_implementation
        function = ALL_ATTENTION_FUNCTIONS[name]

        def attention(module, query, key, value, attention_mask, **kwargs):
            grad = torch.is_grad_enabled()
            if grad:
                query, key, value = _ClockIn.apply(self, query, key, value)
            start = time.perf_counter()
            out, weights = function(module, query, key, value, attention_mask, **kwargs)
            self.seconds += time.perf_counter() - start
            return (_ClockOut.apply(self, out) if grad else out), weights

        AttentionInterface.register(name, attention)


class _ClockOut(torch.autograd.Function):  # after attention: its backward starts the clock
    @staticmethod
    def forward(ctx, clock: AttentionClock, out: torch.Tensor) -> torch.Tensor:
        ctx.clock = clock
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.clock.started.append(time.perf_counter())
        return None, grad


class _ClockIn(torch.autograd.Function):  # before attention: its backward stops the clock
    @staticmethod
    def forward(ctx, clock: AttentionClock, *qkv: torch.Tensor):
        ctx.clock = clock
        return tuple(t.view_as(t) for t in qkv)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        ctx.clock.seconds += time.perf_counter() - ctx.clock.started.pop()
        return None, *grads


def compare_steps(
    world: Path, steps: int, batch_size: int, cache_dir: str, packing_length: int, rounds: int = 4,
    long_packing_length: int = 1024,
) -> dict:  # fmt: skip
    """Padded fp32, packed fp32 (per-sample attention and dense mask, at ``packing_length`` and at
    ``long_packing_length``, where a batch is one pack) and packed bf16-mixed alignment steps on the same cached
    batches, in this process.

    Each batch runs once per variant counted (``FlopCounterMode``, also the warm-up), then ``rounds`` times timed,
    the variants interleaved (their order reversed every other round), Python's garbage collector off. A variant's
    time on a batch is its fastest round (the least disturbed by load); the ratios of each round alone give the
    spread (``*_by_round``)."""
    import gc

    from torch.utils.flop_counter import FlopCounterMode

    from anymal_lit.models.packed_attention import use_flex

    model = build_model(world, packing_length=packing_length)
    model.requires_grad_(False)
    model.projectors.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: identical steps
    data = batches(world, model, cache_dir, batch_size, steps)
    variants = {  # packing length, packed attention, bf16-mixed
        "padded_fp32": (None, "auto", False),
        "packed_fp32": (packing_length, "auto", False),
        "packed_mask_fp32": (packing_length, "mask", False),
        "packed_long_fp32": (long_packing_length, "auto", False),
        "packed_long_mask_fp32": (long_packing_length, "mask", False),
        "packed_bf16": (packing_length, "auto", True),
    }

    def step(batch: dict, variant: str) -> float:
        model.packing_length, model.packing_attention, bf16 = variants[variant]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    flops = dict.fromkeys(variants, 0)
    losses: dict[str, list[float]] = {v: [] for v in variants}
    for batch in data:
        for variant in variants:
            with FlopCounterMode(display=False) as counter:
                losses[variant].append(step(batch, variant))
            flops[variant] += counter.get_total_flops()
    clock = AttentionClock()  # after a packed pass: every variant's attention is now anymal_packed_sdpa's
    clock.install(model.llm.model)
    times = {v: [[0.0] * len(data) for _ in range(rounds)] for v in variants}  # [round][batch]
    attention = dict.fromkeys(variants, 0.0)
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for i, batch in enumerate(data):
                for variant in variants if r % 2 == 0 else reversed(variants):
                    clock.seconds = 0.0
                    start = time.perf_counter()
                    step(batch, variant)
                    times[variant][r][i] = time.perf_counter() - start
                    attention[variant] += clock.seconds
    finally:
        gc.enable()
    unreached = [v for v, a in attention.items() if a == 0.0]
    if unreached:
        raise RuntimeError(f"the attention clock saw no attention in {unreached}: the LLM's attention is not wrapped")
    seconds = {v: sum(min(column) for column in zip(*t)) for v, t in times.items()}
    by_round = {v: [sum(t[r]) for r in range(rounds)] for v, t in times.items()}
    model.packing_attention = "auto"
    flex = use_flex(model.packing_attention, model.llm.model, torch.zeros(1, requires_grad=True))
    rate = {v: flops[v] / seconds[v] for v in variants}

    def ratio(variant: str) -> list[float]:  # FLOP/s of ``variant`` over padded's, each round
        return [
            flops[variant] / by_round[variant][r] / (flops["padded_fp32"] / by_round["padded_fp32"][r])
            for r in range(rounds)
        ]

    fp32, bf16 = sum(losses["packed_fp32"]), sum(losses["packed_bf16"])
    return {
        "flops": flops,
        "seconds": seconds,
        "seconds_by_round": by_round,
        "flops_per_s": rate,
        "packed_vs_padded_flops_ratio": rate["packed_fp32"] / rate["padded_fp32"],
        "packed_vs_padded_flops_ratio_by_round": ratio("packed_fp32"),
        "packed_mask_vs_padded_flops_ratio": rate["packed_mask_fp32"] / rate["padded_fp32"],
        "packed_mask_vs_padded_flops_ratio_by_round": ratio("packed_mask_fp32"),
        "packed_long_vs_padded_flops_ratio": rate["packed_long_fp32"] / rate["padded_fp32"],
        "packed_long_vs_padded_flops_ratio_by_round": ratio("packed_long_fp32"),
        "packed_long_mask_vs_padded_flops_ratio": rate["packed_long_mask_fp32"] / rate["padded_fp32"],
        "packed_long_mask_vs_padded_flops_ratio_by_round": ratio("packed_long_mask_fp32"),
        "long_packing_length": long_packing_length,
        "packed_vs_padded_step_speedup": seconds["padded_fp32"] / seconds["packed_fp32"],
        # the LLM's attention, forward and backward, per step (mean over rounds): what packing's kernel changes
        "attention_ms_per_step": {v: 1000 * a / (rounds * len(data)) for v, a in attention.items()},
        "bf16_step_speedup_vs_fp32": seconds["packed_fp32"] / seconds["packed_bf16"],
        "bf16_loss_rel_diff": abs(bf16 - fp32) / abs(fp32),
        "packing_attention": f"auto: {'flex' if flex else 'documents'}",
        "batches": len(data),
        "rounds": rounds,
    }


def add_results(out: str | Path, results: dict, report: str, rows: list[str]) -> None:
    """Merge ``results`` into ``<out>/results.json`` (written by this script first), write the table ``rows`` to
    ``<out>/<report>`` and print them: how the other ``make bench`` scripts report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **results}
    path.write_text(json.dumps(merged, indent=2))
    (out / report).write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def strategy_bytes(world: Path) -> dict:
    """Per-rank parameter and optimizer-state bytes of DDP and FSDP2 after 2 alignment steps on 2 gloo processes
    (``tests/integration/scripts/train_strategy.py``, both runs in one ``torchrun``)."""
    strategies = ("ddp", "fsdp")
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            {"strategy": s, "steps": 2, "out": f"{tmp}/{s}.json", "ckpt_dir": f"{tmp}/{s}_ckpt"} for s in strategies
        ]
        Path(f"{tmp}/jobs.json").write_text(json.dumps(jobs))
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(REPO / "tests/integration/scripts/train_strategy.py"), str(world), f"{tmp}/jobs.json",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"strategy bytes: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return {s: json.loads(Path(f"{tmp}/{s}.json").read_text())["bytes"] for s in strategies}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="runs/bench")
    # without a varlen attention kernel (CPU) a pack pays attention over its whole length: packs of a few samples
    # (256 tokens) took the packed step from 1.31 s (one 1024-token pack per batch) to 1.01 s (padded: 1.35 s)
    parser.add_argument("--packing-length", type=int, default=256)
    parser.add_argument("--encoders", nargs="+", default=["tiny", "vit-b-16"], choices=["tiny", "vit-b-16"])
    parser.add_argument("--compare-runs", type=int, default=3, help="processes of the interleaved comparison")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    world = Path(args.world)
    cache_dir = str(Path(args.out) / "feature_cache")
    if args.config == "compare":
        result = compare_steps(world, args.steps, args.batch_size, cache_dir, args.packing_length)
        print("RESULT " + json.dumps(result))
        return
    if args.config:
        packed, cached, encoders = args.config.split(",")
        result = run_config(
            world, packed == "packed", cached == "cached", args.steps, args.batch_size, cache_dir, args.packing_length,
            encoders,
        )  # fmt: skip
        print("RESULT " + json.dumps(result))
        return

    start = time.time()
    runs: dict[str, dict[str, dict]] = {}
    for encoders in args.encoders:
        fill_cache(world, build_model(world, None, encoders), cache_dir, args.batch_size, args.steps + 2)
        configs = runs[encoders] = {}
        for packed in ("padded", "packed"):
            for cached in ("live", "cached"):
                cmd = [
                    sys.executable, __file__, "--world", str(world), "--steps", str(args.steps),
                    "--batch-size", str(args.batch_size), "--out", args.out,
                    "--config", f"{packed},{cached},{encoders}", "--packing-length", str(args.packing_length),
                ]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
                configs[f"{packed}_{cached}"] = json.loads(line[len("RESULT ") :])
                print(f"{encoders} {packed:>6} {cached:>6}: {configs[f'{packed}_{cached}']}", flush=True)
    configs = runs[args.encoders[0]]
    # the feature cache holds every encoders' features (keyed by encoder): this runs on the first encoders' ones
    cmd = [
        sys.executable, __file__, "--world", str(world), "--steps", str(min(args.steps, 6)),
        "--batch-size", str(args.batch_size), "--out", args.out, "--config", "compare",
        "--packing-length", str(args.packing_length),
    ]  # fmt: skip
    runs_compared = []  # single runs of this comparison have ranged from 0.97 to 1.05 on one machine
    for _ in range(args.compare_runs):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        runs_compared.append(json.loads(line[len("RESULT ") :]))
        print(f"interleaved steps: {runs_compared[-1]}", flush=True)
    # every figure from the run whose packed / padded FLOP/s ratio is the median, and each ratio of every run
    runs_compared.sort(key=lambda c: c["packed_vs_padded_flops_ratio"])
    compare = runs_compared[len(runs_compared) // 2]
    by_run = {
        f"{k}_by_run": [c[k] for c in runs_compared]
        for k in compare
        if k.endswith("flops_ratio") or k in ("packed_vs_padded_step_speedup", "bf16_step_speedup_vs_fp32")
    }
    peak = matmul_peak()
    bf16_peak = matmul_peak(dtype=torch.bfloat16)
    strategies = strategy_bytes(world)
    best = configs["packed_cached"]
    results = {
        "token_utilization_packed": configs["packed_live"]["token_utilization"],
        "token_utilization_padded": configs["padded_live"]["token_utilization"],
        "speedup_packed_cached_vs_padded_live": best["samples_per_s"] / configs["padded_live"]["samples_per_s"],
        "train_flops_fraction_of_matmul_peak": best["achieved_flops_per_s"] / peak,
        "matmul_peak_flops_per_s": peak,
        "packed_vs_padded_flops_ratio": compare["packed_vs_padded_flops_ratio"],
        "packed_mask_vs_padded_flops_ratio": compare["packed_mask_vs_padded_flops_ratio"],
        **{k: compare[k] for k in compare if k.endswith("_by_round") or k.startswith("packed_long")},
        **by_run,
        "packed_vs_padded_step_speedup": compare["packed_vs_padded_step_speedup"],
        "packing_attention": compare["packing_attention"],
        "attention_ms_per_step": compare["attention_ms_per_step"],
        "bf16_matmul_peak_flops_per_s": bf16_peak,
        "bf16_vs_fp32_matmul_peak": bf16_peak / peak,
        "bf16_step_speedup_vs_fp32": compare["bf16_step_speedup_vs_fp32"],
        "bf16_train_flops_fraction_of_bf16_peak": compare["flops_per_s"]["packed_bf16"] / bf16_peak,
        "fp32_train_flops_fraction_of_fp32_peak": compare["flops_per_s"]["packed_fp32"] / peak,
        "bf16_loss_rel_diff": compare["bf16_loss_rel_diff"],
        "interleaved_steps": compare,
        "fsdp_param_bytes_per_rank_vs_ddp": strategies["fsdp"]["params"] / strategies["ddp"]["params"],
        "fsdp_optimizer_bytes_per_rank_vs_ddp": strategies["fsdp"]["optimizer"] / strategies["ddp"]["optimizer"],
        "strategy_bytes_per_rank": strategies,
        "configs": configs,
        "encoders": args.encoders[0],
        **{
            f"speedup_packed_cached_vs_padded_live_{name.replace('-', '_')}": c["packed_cached"]["samples_per_s"]
            / c["padded_live"]["samples_per_s"]
            for name, c in runs.items()
        },
        "configs_by_encoders": runs,
        "llm": LLM,
        "batch_size": args.batch_size,
        "packing_length": args.packing_length,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "wall_s": time.time() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = []
    for name, table in runs.items():
        rows += [f"encoders: {name}", "",
                 "| config | samples/s | tokens/s | token utilisation | step s | achieved GFLOP/s | peak RSS MB |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip
        for config, c in table.items():
            rows.append(
                f"| {config} | {c['samples_per_s']:.1f} | {c['tokens_per_s']:.0f} | {c['token_utilization']:.3f} | "
                f"{c['step_s']:.3f} | {c['achieved_flops_per_s'] / 1e9:.1f} | {c['peak_rss_mb']:.0f} |"
            )
        speedup = table["packed_cached"]["samples_per_s"] / table["padded_live"]["samples_per_s"]
        rows += ["", f"speed-up packed+cached vs padded+live ({name} encoders): {speedup:.2f}x", ""]
    rows += [
        "",
        f"matmul peak: {peak / 1e9:.1f} GFLOP/s; packed+cached step: "
        f"{results['train_flops_fraction_of_matmul_peak']:.1%} of it",
        f"interleaved on the same batches: packed / padded FLOP/s {results['packed_vs_padded_flops_ratio']:.2f}, "
        f"the median of {len(runs_compared)} runs "
        f"({', '.join(f'{r:.3f}' for r in results['packed_vs_padded_flops_ratio_by_run'])}) "
        f"(step speed-up {results['packed_vs_padded_step_speedup']:.2f}x, packed attention: "
        f"{results['packing_attention']}; with the dense mask instead: "
        f"{results['packed_mask_vs_padded_flops_ratio']:.2f}); each round of the median run: "
        f"{', '.join(f'{r:.2f}' for r in results['packed_vs_padded_flops_ratio_by_round'])}",
        "the LLM's attention per step, forward + backward (ms): "
        + ", ".join(f"{v} {ms:.0f}" for v, ms in compare["attention_ms_per_step"].items()),
        f"one {compare['long_packing_length']}-token pack per batch: packed / padded FLOP/s "
        f"{results['packed_long_vs_padded_flops_ratio']:.2f} (dense mask: "
        f"{results['packed_long_mask_vs_padded_flops_ratio']:.2f})",
        f"bf16-mixed vs fp32 packed step: {results['bf16_step_speedup_vs_fp32']:.2f}x; bf16 matmul peak "
        f"{bf16_peak / 1e9:.1f} GFLOP/s ({results['bf16_vs_fp32_matmul_peak']:.1f}x fp32), bf16 step at "
        f"{results['bf16_train_flops_fraction_of_bf16_peak']:.1%} of it",
        f"FSDP / DDP per-rank bytes: parameters {results['fsdp_param_bytes_per_rank_vs_ddp']:.3f}, "
        f"optimizer {results['fsdp_optimizer_bytes_per_rank_vs_ddp']:.3f}",
    ]
    (out / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
