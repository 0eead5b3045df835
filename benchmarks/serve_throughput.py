"""Throughput and latency of `anymal-lit serve` on the toy model: 16 concurrent clients vs one at a time.

    python benchmarks/serve_throughput.py [--model runs/demo/dpo/.../export] [--world runs/toyworld] [--repeats 3]

Starts the server (a subprocess on 127.0.0.1, CPU) on a trained export or bundle (default: the newest DPO export of
`make demo`) and sends the toy world's image caption prompts (inline PNG data URLs, greedy, at most `--max-tokens`
new tokens) with the official `openai` client:

- `sequential`: one client, one request at a time (what a server without concurrency gets);
- `concurrent`: `--clients` threads at once, the server batching them (`--max-batch-size 16`);
- `concurrent_unbatched`: the same clients against a second server started with `--max-batch-size 1`;
- time to first token of a streamed reply vs the latency of the same request unstreamed.

Each setting runs `--repeats` times (the machine may be shared: the spread is reported, with `uptime`'s load).
Writes runs/bench/serve.json and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]


def newest_export() -> str:
    exports = sorted(Path("runs/demo/dpo").rglob("export/export.json"), key=lambda p: p.stat().st_mtime)
    if not exports:
        raise SystemExit("no runs/demo/dpo/**/export: run `make demo` first or pass --model")
    return str(exports[-1].parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m anymal_lit.cli serve` in its own process group (stopped with all its workers)."""

    def __init__(self, model: str, max_batch_size: int, log: Path) -> None:
        self.port = free_port()
        self.log = log.open("w")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "anymal_lit.cli", "serve", "--model", model, "--port", str(self.port),
               "--device", "cpu", "--max-batch-size", str(max_batch_size)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); see {log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:  # refused while starting, 503 until the model is loaded
                pass
            time.sleep(2)
        self.stop()
        raise SystemExit(f"the server did not become healthy in 900 s; see {log}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # the server stops its workers
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its group is left
        except ProcessLookupError:
            pass
        self.log.close()


def image_requests(jsonl: Path, count: int) -> list[list[dict]]:
    """The first ``count`` image prompts of a toy-world set as OpenAI messages, the image inline (cycled if fewer)."""
    world = jsonl.parent
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out = []
    for i in range(count):
        record = records[i % len(records)]
        image = base64.b64encode((world / record["image"]).read_bytes()).decode()
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        parts = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                 {"type": "text", "text": question}]  # fmt: skip
        out.append([{"role": "user", "content": parts}])
    return out


def timed(client: openai.OpenAI, messages: list[dict], max_tokens: int) -> float:
    start = time.perf_counter()
    client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0)
    return time.perf_counter() - start


def run_load(url: str, requests: list[list[dict]], clients: int, max_tokens: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(lambda m: timed(client, m, max_tokens), requests))
    wall = time.perf_counter() - start
    return {"requests_per_s": len(requests) / wall, "p50_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}  # fmt: skip


STORY = [{"role": "user", "content": "Tell me a long story about shapes."}]
"""A prompt the toy model answers at length (its image answers are a few words: first token ~ whole reply)."""


def first_token(url: str, requests: list[list[dict]], max_tokens: int) -> dict[str, float]:
    """Median time to the first streamed text vs the median latency of the same requests unstreamed."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    ttft, full, tokens = [], [], []
    for messages in requests:
        start = time.perf_counter()
        stream = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0,
                                                stream=True)  # fmt: skip
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        ttft.append(first if first is not None else time.perf_counter() - start)
        start = time.perf_counter()
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0)
        full.append(time.perf_counter() - start)
        tokens.append(reply.usage.completion_tokens)
    return {"ttft_stream_p50_s": statistics.median(ttft), "full_reply_p50_s": statistics.median(full),
            "reply_tokens_p50": statistics.median(tokens)}  # fmt: skip


def spread(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs),
                "max": max(r[k] for r in runs)} for k in runs[0]}  # fmt: skip


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="export or bundle (default: the newest runs/demo/dpo/**/export)")
    parser.add_argument("--world", default="runs/toyworld")
    parser.add_argument("--prompts", default="image_caption_val.jsonl", help="toy-world set the prompts come from")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-unbatched", action="store_true", help="skip the --max-batch-size 1 server")
    parser.add_argument("--out", default="runs/bench/serve.json")
    args = parser.parse_args()
    model = args.model or newest_export()
    requests = image_requests(Path(args.world) / args.prompts, args.requests)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"model": model, "requests": args.requests, "clients": args.clients, "max_tokens": args.max_tokens,
                    "prompts": args.prompts,
                    "repeats": args.repeats, "cpus": os.cpu_count(), "load_before": load()}  # fmt: skip
    server = Server(model, 16, out.with_suffix(".server.log"))
    try:
        run_load(server.url, requests[: args.clients], args.clients, args.max_tokens)  # warm-up
        sequential, concurrent, stream = [], [], []
        for _ in range(args.repeats):
            sequential.append(run_load(server.url, requests, 1, args.max_tokens))
            concurrent.append(run_load(server.url, requests, args.clients, args.max_tokens))
            story = first_token(server.url, [STORY] * 4, 64)
            stream.append({**first_token(server.url, requests[:8], args.max_tokens),
                           **{f"story_{k}": v for k, v in story.items()}})  # fmt: skip
    finally:
        server.stop()
    result.update(sequential=spread(sequential), concurrent=spread(concurrent), streaming=spread(stream))
    if not args.skip_unbatched:
        server = Server(model, 1, out.with_suffix(".server1.log"))
        try:
            run_load(server.url, requests[: args.clients], args.clients, args.max_tokens)
            unbatched = [run_load(server.url, requests, args.clients, args.max_tokens) for _ in range(args.repeats)]
        finally:
            server.stop()
        result["concurrent_unbatched"] = spread(unbatched)
    rps = {k: result[k]["requests_per_s"]["median"] for k in ("sequential", "concurrent", "concurrent_unbatched")
           if k in result}  # fmt: skip
    result["speedup_concurrent_vs_sequential"] = rps["concurrent"] / rps["sequential"]
    if "concurrent_unbatched" in rps:
        result["speedup_batched_vs_unbatched"] = rps["concurrent"] / rps["concurrent_unbatched"]
    result["load_after"] = load()
    out.write_text(json.dumps(result, indent=2))
    print(f"{'setting':<24}{'req/s (min-max)':>26}{'p50 s':>10}{'p95 s':>10}")
    for key in ("sequential", "concurrent", "concurrent_unbatched"):
        if key in result:
            r = result[key]
            rps = r["requests_per_s"]
            span = f"{rps['median']:.2f} ({rps['min']:.2f}-{rps['max']:.2f})"
            print(f"{key:<24}{span:>26}{r['p50_s']['median']:>10.3f}{r['p95_s']['median']:>10.3f}")
    s = result["streaming"]
    for prefix, what in (("", "image prompts"), ("story_", "'Tell me a long story about shapes.'")):
        print(f"time to first token (streamed) {s[prefix + 'ttft_stream_p50_s']['median']:.3f} s vs full reply "
              f"{s[prefix + 'full_reply_p50_s']['median']:.3f} s, {s[prefix + 'reply_tokens_p50']['median']:.0f} "
              f"tokens: {what}, one client")  # fmt: skip
    print(
        f"speed-up, {args.clients} clients batched vs one at a time: {result['speedup_concurrent_vs_sequential']:.2f}x"
    )
    if "speedup_batched_vs_unbatched" in result:
        print(f"speed-up, batched vs --max-batch-size 1 (both {args.clients} clients): "
              f"{result['speedup_batched_vs_unbatched']:.2f}x")  # fmt: skip
    print(f"load: {result['load_before']}  ->  {result['load_after']}\nwrote {out}")


if __name__ == "__main__":
    main()
