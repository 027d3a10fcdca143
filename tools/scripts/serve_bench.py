#!/usr/bin/env python3
"""Load test of an OpenAI-compatible server (`qkv serve`, llama.cpp's `llama-server`, ...): for each number of
concurrent clients (default 1, 4, 16), every client streams completions of a fixed number of tokens, back to
back, for a fixed number of requests; reports aggregate generated tok/s, p50/p99 time to first token and
inter-token latency.

    target/release/qkv serve --model DIR --port 8080 --max-seqs 16 &
    tools/scripts/venv.sh python tools/scripts/serve_bench.py --url http://127.0.0.1:8080 --tokens 128

Requests are greedy (`temperature: 0`); one that ends early at EOS counts only the tokens it made (each line says
how many were generated in all). Use `--json FILE` to keep the raw
figures. A benchmark, not a test: run it on a quiet machine.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

try:  # the HTTP client the `openai` package brings (httpx2 in openai >= 3)
    import httpx2 as httpx
except ImportError:
    import httpx

PROMPTS = [
    "Once upon a time, there was a little girl named",
    "The big dog ran to the park and",
    "Tom and his mom went to the store to buy",
    "In a small town by the sea, a boy found",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


async def one_request(client, url, model, prompt, tokens, chat):
    body = {"model": model, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if chat:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
    else:
        path, body["prompt"] = "/v1/completions", prompt
    t0 = time.perf_counter()
    stamps, usage = [], None
    async with client.stream("POST", url + path, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices", []):
                text = c.get("text") if not chat else (c.get("delta") or {}).get("content")
                if text:
                    stamps.append(time.perf_counter())
    n = usage["completion_tokens"] if usage else len(stamps)
    ttft = (stamps[0] - t0) if stamps else float("nan")
    itl = [b - a for a, b in zip(stamps, stamps[1:])]
    return n, ttft, itl


async def run_level(url, model, clients, requests, tokens, chat):
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        ttfts, itls, total = [], [], 0
        queue = list(range(requests))

        async def worker(w):
            nonlocal total
            while queue:
                i = queue.pop()
                n, ttft, itl = await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], tokens, chat)
                total += n
                ttfts.append(ttft)
                itls.extend(itl)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": requests,
        "generated_tokens": total,
        "wall_s": wall,
        "tok_per_s": total / wall if wall > 0 else 0.0,
        "ttft_p50_s": pct(ttfts, 50),
        "ttft_p99_s": pct(ttfts, 99),
        "itl_p50_s": pct(itls, 50),
        "itl_p99_s": pct(itls, 99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default=None, help="model name (default: the first of /v1/models)")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=None, help="requests per level (default: 2 x clients)")
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens of every request")
    ap.add_argument("--chat", action="store_true", help="use /v1/chat/completions instead of /v1/completions")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    model = a.model or httpx.get(a.url + "/v1/models").json()["data"][0]["id"]
    rows = []
    for c in [int(x) for x in a.clients.split(",")]:
        rows.append(asyncio.run(run_level(a.url, model, c, a.requests or 2 * c, a.tokens, a.chat)))
        r = rows[-1]
        print(f"clients {c:3d}: {r['generated_tokens']:6d} tokens in {r['wall_s']:7.2f} s = {r['tok_per_s']:8.1f} tok/s"
              f" | TTFT p50 {1e3 * r['ttft_p50_s']:7.1f} ms p99 {1e3 * r['ttft_p99_s']:7.1f} ms"
              f" | ITL p50 {1e3 * r['itl_p50_s']:6.1f} ms p99 {1e3 * r['itl_p99_s']:6.1f} ms", flush=True)
    if len(rows) > 1 and rows[0]["tok_per_s"] > 0:
        print(f"aggregate tok/s at {rows[-1]['clients']} clients = {rows[-1]['tok_per_s'] / rows[0]['tok_per_s']:.2f}x"
              f" {rows[0]['clients']} client(s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"url": a.url, "model": model, "tokens": a.tokens, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
