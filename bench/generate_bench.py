"""Generator benchmark (not a test): one static batch of N prompts against N sequential calls.

Same N prompts (chat, answer and summarize templates of different lengths), greedy, so both modes
produce exactly the same tokens; the ratio is sequential time / batch time. Also times loading the
model cold from the GGUF file (dequantized by transformers) and from the converted-weights cache,
each in a fresh subprocess so the per-process model cache cannot help. Writes
bench/reports/generate.md.

    python -m bench.generate_bench [--batch 8] [--max-new-tokens 32] [--threads 1] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import REPORTS_DIR, ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPORT = REPORTS_DIR / "generate.md"

CHATS = [
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Explain in simple words why the sky is blue.",
]
QUESTIONS = [
    ("Who scored the winning goal?", "Arsenal beat Chelsea 2-1 on Sunday; Saka scored the winner in the 88th minute."),
    ("What did the bank do?", "The central bank raised interest rates by half a point, citing persistent inflation."),
]
TEXTS = [
    "The city council approved a new park on Tuesday after residents petitioned for more green space "
    "in the crowded eastern district. Construction starts in spring and should take two years.",
    "Shares in the carmaker fell 8% after it cut its sales forecast, blaming weak demand in Europe and "
    "higher battery costs. Analysts said the warning was the third this year.",
    "A new study finds that people who walk 7,000 steps a day have a lower risk of heart disease than "
    "those who walk fewer than 4,000, though gains level off beyond 10,000 steps.",
]


def prompts_for(gen, n: int) -> list[str]:
    pool = ([gen.apply_template("chat", [{"role": "user", "content": c}]) for c in CHATS]
            + [gen.apply_template("answer", {"question": q, "context": c}) for q, c in QUESTIONS]
            + [gen.apply_template("summarize", t) for t in TEXTS])
    return [pool[i % len(pool)] for i in range(n)]


def time_load(use_cache: bool) -> float:
    """Seconds to load the default model in a fresh process (cold GGUF or converted cache)."""
    code = ("import time; t = time.perf_counter(); from mtl.generate import Generator; Generator.load(); "
            "print(time.perf_counter() - t)")
    env = {**os.environ, "MTL_GGUF_CACHE": "1" if use_cache else "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for decoding")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-load", action="store_true", help="do not time cold loads")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()

    from mtl.generate import Generator

    load_gguf = load_cached = None
    if not args.skip_load:
        time_load(True)  # make sure the converted cache exists before timing it
        load_gguf, load_cached = time_load(False), time_load(True)
        print(f"load: GGUF {load_gguf:.1f} s, converted cache {load_cached:.1f} s")
    gen = Generator.load(num_threads=args.threads)
    prompts = prompts_for(gen, args.batch)
    gen.generate(prompts[:2], max_new_tokens=4)  # warm-up (allocator, kernels)

    seq_times, batch_times = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        sequential = [gen.generate([p], max_new_tokens=args.max_new_tokens)[0] for p in prompts]
        seq_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        batched = gen.generate(prompts, max_new_tokens=args.max_new_tokens)
        batch_times.append(time.perf_counter() - t)
        print(f"sequential {seq_times[-1]:.2f} s, batch {batch_times[-1]:.2f} s")
    same = [a.text == b.text for a, b in zip(sequential, batched)]
    tokens = sum(c.completion_tokens for c in batched)
    seq_s, batch_s = statistics.median(seq_times), statistics.median(batch_times)
    ratio = seq_s / batch_s
    lines = [
        "# Generator: static batch vs sequential calls",
        "",
        f"Command: `python -m bench.generate_bench --batch {args.batch} --max-new-tokens {args.max_new_tokens} "
        f"--threads {args.threads} --repeats {args.repeats}`",
        "",
        f"Model: {gen.name} (GGUF Q4_1 dequantized to float32 by transformers), device {gen.device}, "
        f"torch threads {args.threads}; host: {platform.machine()}, {os.cpu_count()} CPUs "
        f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; the dev box is shared, "
        "so absolute numbers move with other work; the ratio is the figure to compare).",
        "",
        "| mode | wall time (median) | completion tokens | tokens/s |",
        "| --- | --- | --- | --- |",
        f"| {args.batch} sequential calls | {seq_s:.2f} s | {tokens} | {tokens / seq_s:.1f} |",
        f"| one static batch of {args.batch} | {batch_s:.2f} s | {tokens} | {tokens / batch_s:.1f} |",
        "",
        f"**Batch speed-up: {ratio:.2f}x** (sequential time / batch time, same greedy tokens; "
        f"texts identical in {sum(same)}/{len(same)} rows).",
        "",
        f"Runs (sequential / batch, s): {', '.join(f'{s:.2f}/{b:.2f}' for s, b in zip(seq_times, batch_times))}.",
    ]
    if load_gguf is not None:
        lines += [
            "",
            "## Load time (fresh process, includes importing torch and transformers)",
            "",
            f"- from the GGUF file (transformers dequantizes every tensor): {load_gguf:.1f} s",
            f"- from the converted-weights cache (safetensors, written on first load): {load_cached:.1f} s",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
