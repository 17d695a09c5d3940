"""Continuous batching benchmark (not a test): our decode engine against static batches, sequential
calls and transformers' own continuous batching, on the same model, prompts and greedy tokens.

Part A, throughput: N streams (1, 8, 32) all arriving at once, each up to --max-new-tokens.
  * sequential: one `Generator.generate` call per stream, one after another;
  * static: `Generator.generate` over batches of --slots streams in arrival order (a batch decodes
    until its longest row is done: the serving path before issue 12);
  * transformers CB: `model.generate_batch` (transformers' continuous batching), where it runs;
  * ours: `mtl.engine.ContinuousEngine` with --slots slots.
  Tokens/s is completion tokens over wall time; TTFT is each stream's time to its first token.
Part B, priority: an interactive stream arriving while 8 or 32 batch-class streams stay in flight
  (each one that ends replaced at once), with the engine's preemption on and off, against the same
  stream on an idle engine.

Every mode runs in a fresh process of its own (`measure` says why), one after another, on the same
torch threads (--threads, default every core). Writes bench/reports/continuous.md, .json and .png.

    python -m bench.continuous_bench [--streams 1 8 32] [--max-new-tokens 48] [--slots 8]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import REPORTS_DIR, ROOT
from bench.generate_bench import prompts_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPORT = REPORTS_DIR / "continuous.md"


def run_sequential(gen: Any, prompts: list[str], n_new: int) -> dict:
    t0 = time.perf_counter()
    ttft, texts, tokens = [], [], 0
    for p in prompts:
        first = None
        for item in gen.stream_request(_request(p, n_new)):
            if first is None:
                first = time.perf_counter() - t0
            if not isinstance(item, str):
                texts.append(item.text)
                tokens += item.completion_tokens
        ttft.append(first)
    return _summary(time.perf_counter() - t0, tokens, ttft, texts)


def run_static(gen: Any, prompts: list[str], n_new: int, slots: int) -> dict:
    """Batches of `slots` in arrival order; a batch's first step is each of its rows' first token."""
    t0 = time.perf_counter()
    ttft, texts, tokens = [], [], 0
    for start in range(0, len(prompts), slots):
        requests = [_request(p, n_new) for p in prompts[start:start + slots]]
        first, rows = None, []
        for rows in gen._decode(requests):  # noqa: SLF001 - the static loop itself, step by step
            if first is None:
                first = time.perf_counter() - t0
        ttft += [first] * len(requests)
        for row in rows:
            done = row.completion()
            texts.append(done.text)
            tokens += done.completion_tokens
    return _summary(time.perf_counter() - t0, tokens, ttft, texts)


def new_engine(gen: Any, slots: int) -> Any:
    """The child's one engine, started: every run of a child goes through it, on its one thread, as a
    replica's does (a fresh engine per run put each run on a new thread: its first tokens came 10-70 %
    later than on a thread that had run the model before, see `measure`)."""
    from mtl.engine import ContinuousEngine

    engine = ContinuousEngine(gen, slots=slots)
    engine.start()
    return engine


def _sink(i: int, on_end: Callable[[int, Any], None], first: list[float | None] | None = None,
          arrived: list[float] | None = None) -> Callable[[Any], None]:
    """An engine `emit` for stream i: records its time to first token in `first[i]` (from
    `arrived[i]`) when given, and calls `on_end(i, item)` with its Completion or exception."""
    from mtl.generate import Completion

    def emit(item: Any) -> None:
        if first is not None and first[i] is None and isinstance(item, str | Completion):
            first[i] = time.perf_counter() - arrived[i]
        if isinstance(item, Completion | BaseException):
            on_end(i, item)
    return emit


def run_ours(engine: Any, prompts: list[str], n_new: int, *, ranks: list[int] | None = None,
             at: list[float] | None = None) -> dict:
    """All prompts through `engine` (idle at the start); `at[i]` delays prompt i's arrival (seconds
    after the start)."""
    from mtl.engine import EngineStats
    from mtl.generate import Completion

    engine.stats = EngineStats()
    n = len(prompts)
    first: list[float | None] = [None] * n
    arrived: list[float] = [0.0] * n
    done: dict[int, Completion] = {}
    all_done = threading.Event()

    def ended(i: int, item: Any) -> None:
        done[i] = item
        if len(done) == n:
            all_done.set()

    t0 = time.perf_counter()
    order = sorted(range(n), key=lambda i: (at or [0.0] * n)[i])
    for i in order:
        wait = (at[i] if at else 0.0) - (time.perf_counter() - t0)
        if wait > 0:
            time.sleep(wait)
        arrived[i] = time.perf_counter()
        engine.submit(_request(prompts[i], n_new if ranks is None or ranks[i] > 0 else n_new // 3),
                      _sink(i, ended, first, arrived), rank=ranks[i] if ranks else 2)
    all_done.wait(3600)
    wall = time.perf_counter() - t0
    bad = [d for d in done.values() if not isinstance(d, Completion)]
    if bad:
        raise RuntimeError(f"engine failed: {bad[0]!r}")
    out = _summary(wall, sum(done[i].completion_tokens for i in range(n)), first, [done[i].text for i in range(n)])
    out["stats"] = engine.stats.as_dict()
    out["first_s"] = first
    return out


def run_transformers_cb(gen: Any, prompts: list[str], n_new: int, slots: int) -> dict:
    """transformers' continuous batching (`generate_batch`); no per-token timestamps here: TTFT n/a."""
    from transformers import GenerationConfig

    ids = [gen._encode(p) for p in prompts]  # noqa: SLF001
    config = GenerationConfig(max_new_tokens=n_new, do_sample=False, eos_token_id=sorted(gen.eos_token_ids),
                              pad_token_id=gen.pad_token_id)
    t0 = time.perf_counter()
    outputs = gen.model.generate_batch(ids, generation_config=config, progress_bar=False)
    wall = time.perf_counter() - t0
    tokens, texts = 0, []
    for out in outputs.values():
        generated = [t for t in out.generated_tokens if t not in gen.eos_token_ids]
        tokens += len(out.generated_tokens)
        texts.append(gen._decode_text(generated))  # noqa: SLF001
    return _summary(wall, tokens, [], texts)


def _request(prompt: str, n_new: int):
    from mtl.generate import GenerationRequest

    return GenerationRequest(prompt, max_new_tokens=max(1, n_new))


def _summary(wall: float, tokens: int, ttft: list, texts: list[str]) -> dict:
    ttft = [t for t in ttft if t is not None]
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall if wall else 0.0,
            "ttft_p50_s": statistics.median(ttft) if ttft else None,
            "ttft_max_s": max(ttft) if ttft else None, "texts": texts}


PROBE_AT_S = tuple(1.5 + 0.7 * i for i in range(8))  # interactive arrivals, while the batch streams decode


def priority_probe(engine: Any, prompts: list[str], n_new: int, background: int, preempt: bool,
                   urgent_round: bool = True) -> dict:
    """Interactive streams arriving one by one (PROBE_AT_S) while `background` batch-class streams
    stay in flight: a closed loop, each batch stream that ends is replaced at once by a new one, so
    the batch is as full at the last probe as at the first (an open-loop burst drained before the
    later probes came: some arrived at free slots). Their TTFT (median and worst), and how many
    batch-class rows were decoding when each probe arrived (the proof that the probe met a full batch)."""
    import queue

    from mtl.engine import EngineStats

    engine.preempt, engine.urgent_round = preempt, urgent_round
    engine.stats = EngineStats()
    batch = [prompts[1 + i % (len(prompts) - 1)] for i in range(background)]
    ended: queue.Queue[int] = queue.Queue()
    probes_left = threading.Semaphore(0)
    first: list[float | None] = [None] * len(PROBE_AT_S)
    arrived = [0.0] * len(PROBE_AT_S)
    failures: list[BaseException] = []

    def batch_ended(i: int, item: Any) -> None:
        if isinstance(item, BaseException):
            failures.append(item)
        ended.put(i)

    def probe_ended(i: int, item: Any) -> None:
        if isinstance(item, BaseException):
            failures.append(item)
        probes_left.release()

    stop = threading.Event()

    def refill() -> None:  # off the engine thread: submit tokenizes
        while not stop.is_set():
            try:
                i = ended.get(timeout=0.05)
            except queue.Empty:
                continue
            engine.submit(_request(batch[i], n_new), _sink(i, batch_ended), rank=2)

    for i, prompt in enumerate(batch):
        engine.submit(_request(prompt, n_new), _sink(i, batch_ended), rank=2)
    feeder = threading.Thread(target=refill, daemon=True)
    feeder.start()
    t0 = time.perf_counter()
    busy_rows: list[int] = []
    for i, at in enumerate(PROBE_AT_S):
        time.sleep(max(0.0, at - (time.perf_counter() - t0)))
        busy_rows.append(sum(1 for s in list(engine.running) if s.rank == 2))
        arrived[i] = time.perf_counter()
        engine.submit(_request(prompts[0], n_new // 3), _sink(i, probe_ended, first, arrived), rank=0)
    for _ in PROBE_AT_S:
        probes_left.acquire(timeout=600)
    stop.set()
    feeder.join()
    for seq in list(engine.running) + list(engine.waiting.values()):  # the batch streams still in flight
        engine.cancel(seq.key)
    if failures:
        raise RuntimeError(f"engine failed: {failures[0]!r}")
    ttft = [t for t in first if t is not None]
    return {"background": background, "preempt": preempt, "urgent_round": urgent_round,
            "interactive_ttft_s": statistics.median(ttft), "interactive_ttft_max_s": max(ttft),
            "interactive_ttfts_s": ttft, "paused": engine.stats.paused, "batch_rows_at_arrival": busy_rows}


def child(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: see `measure` for why a process each."""
    from mtl.generate import Generator

    gen = Generator.load(num_threads=args.threads)
    mode, n = args.child, args.n
    if mode == "probe":
        prompts = prompts_for(gen, 9)
        engine = new_engine(gen, args.slots)
        run_ours(engine, prompts[:2], 4)  # warm-up, on the engine's thread like everything measured
        # the idle baseline: the probe's own stream alone, median of 5
        idle = [run_ours(engine, prompts[:1], args.max_new_tokens // 3)["ttft_p50_s"] for _ in range(5)]
        probe = priority_probe(engine, prompts, args.max_new_tokens, n, args.preempt, args.urgent_round)
        return {**probe, "idle_ttft_s": statistics.median(idle), "idle_ttfts_s": idle}
    prompts = prompts_for(gen, n)
    if mode == "ours":
        engine = new_engine(gen, args.slots)
        run_ours(engine, prompts[:2], 4)  # warm-up on the engine's thread
        out = run_ours(engine, prompts, args.max_new_tokens)
    else:
        gen.generate(prompts[:2], max_new_tokens=4)  # warm-up on this thread, where the mode runs
        runner = {"sequential": lambda: run_sequential(gen, prompts, args.max_new_tokens),
                  "static": lambda: run_static(gen, prompts, args.max_new_tokens, args.slots),
                  "transformers_cb": lambda: run_transformers_cb(gen, prompts, args.max_new_tokens, args.slots)}
        out = runner[mode]()
    out.pop("first_s", None)
    return out


def measure(args: argparse.Namespace, mode: str, n: int, **extra: Any) -> dict:
    """`mode` at `n` streams in a fresh process. Why a process each: once one thread has run torch's
    parallel kernels, another thread doing the same ran 1.5-3.5x slower here (a static batch of 8
    x 24 tokens: 4.7 s on the main thread, 7-17 s on a second thread after the main one had run),
    and the engine decodes on its own thread; fresh, either thread runs at the same speed (4.6-5.0 s)."""
    cmd = [sys.executable, "-m", "bench.continuous_bench", "--child", mode, "--n", str(n), "--slots", str(args.slots),
           "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    if extra.get("preempt") is False:
        cmd.append("--no-preempt")
    if extra.get("urgent_round") is False:
        cmd.append("--no-urgent-round")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--skip-sequential-above", type=int, default=8,
                        help="sequential calls only up to this many streams (they take N times one stream)")
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--no-preempt", dest="preempt", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--no-urgent-round", dest="urgent_round", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args), default=str), flush=True)
        # Out at once: torch's intra-op pool of the (stopped) engine thread can abort the
        # interpreter's teardown ("terminate called without an active exception").
        os._exit(0)

    results: dict[str, Any] = {"throughput": [], "priority": [], "args": vars(args) | {"out": str(args.out)}}
    for n in args.streams:
        row: dict[str, Any] = {"streams": n}
        modes = ["static", "ours", "transformers_cb"]
        if n <= args.skip_sequential_above:
            modes.insert(0, "sequential")
        for name in modes:
            row[name] = measure(args, name, n)
            shown = row[name].get("tokens_per_s")
            print(f"{n:>3} streams  {name:<16} " + (f"{shown:6.1f} tokens/s  TTFT p50 "
                  f"{_fmt(row[name].get('ttft_p50_s'))}" if shown is not None else row[name]["error"]), flush=True)
        row["same_text_as_static"] = row["ours"].get("texts") == row["static"].get("texts")
        results["throughput"].append(row)
    # preemption with the urgent second round (the default), without it, and no preemption at all
    variants = [(True, True), (True, False), (False, True)]
    for background in (8, 32):
        for preempt, urgent_round in variants:
            probe = measure(args, "probe", background, preempt=preempt, urgent_round=urgent_round)
            if "error" in probe:
                print(f"probe failed: {probe['error']}")
                continue
            probe["ratio_to_idle"] = probe["interactive_ttft_s"] / probe["idle_ttft_s"]
            results["priority"].append(probe)
            print(f"interactive TTFT beside {background} batch streams, preempt {preempt}, urgent round "
                  f"{urgent_round}: {_fmt(probe['interactive_ttft_s'])} ({probe['ratio_to_idle']:.1f}x its idle "
                  f"{_fmt(probe['idle_ttft_s'])})", flush=True)
    results["idle_ttft_s"] = statistics.median(p["idle_ttft_s"] for p in results["priority"])
    write_report(results, args)


def _fmt(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def write_report(results: dict, args: argparse.Namespace) -> None:
    from bench.continuous_report import render

    args.out.parent.mkdir(parents=True, exist_ok=True)
    for row in results["throughput"]:
        for mode in row.values():
            if isinstance(mode, dict):
                mode.pop("texts", None)
                mode.pop("first_s", None)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    where = (f"SmolLM2-135M-Instruct (float32) on CPU, torch threads {args.threads}; host {platform.machine()}, "
             f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}")
    text = render(results, where, args.out.with_suffix(".png"))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
