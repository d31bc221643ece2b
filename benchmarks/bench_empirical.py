"""LoRA-ML retraining throughput and peak memory against SR, same model, same batches.

Each measurement runs in a fresh worker process (peak memory on CPU is the process's peak
resident set size, which only grows, so methods cannot share a process); workers alternate
SR, LoRA-ML, SR, LoRA-ML, ... for ``--rounds`` rounds and the best examples/s of each method is
kept (the least disturbed by other load). A step is a full retraining step: forward over B*K
(context, candidate) pairs, K-way cross-entropy, backward, gradient clipping, AdamW.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (model, optimizer state, activations);
on CPU the growth of the peak resident set size (``resource.getrusage``) from just before the
model is built to the end of the timed steps (model, optimizer state, activations, allocator
caches).

Usage::

    .venv/bin/python benchmarks/bench_empirical.py [--model minilm] [--candidates 8]
        [--max-length 64] [--steps 6] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    """Time ``args.steps`` retraining steps of ``args.worker`` after one warm-up step."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from loraml.empirical import methods as M
    from loraml.empirical.model import PairTokenizer, load_encoder
    from loraml.empirical.run import RunConfig, StepBudget, _Context, _optimizer, _step, load_split

    torch.set_num_threads(args.threads)
    cfg = RunConfig(
        model=args.model,
        data=args.data,
        n_retrain=args.tasks,
        n_test=1,
        n_candidates=args.candidates,
        max_length=args.max_length,
    )
    split = load_split(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, tokenizer = load_encoder(args.model)
    ctx = _Context(
        cfg, split, PairTokenizer(tokenizer, args.max_length), device, StepBudget(), False
    )
    sizes = [len(t.train) for t in split.retrain]
    order = M.interleaved_batches(sizes, args.batch_size, np.random.default_rng(0))
    order = (order * (1 + (args.steps + 1) // len(order)))[: args.steps + 1]
    batches = [
        ([split.retrain[t].train[i] for t, i in items], [t for t, _ in items]) for items in order
    ]
    rss0 = _rss_mib()
    torch.manual_seed(0)
    encoder, _ = load_encoder(args.model)
    model = M.build_retrain_model(
        args.worker,
        encoder,
        len(split.retrain),
        rank=args.rank,
        alpha=16.0,
        dropout=args.dropout,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(params, 5e-5, ctx, 10 * len(batches))
    _step(model, *batches[0], optimizer, scheduler, ctx)  # warm-up (allocations, optimizer state)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for batch in batches[1:]:
        t0 = time.perf_counter()
        _step(model, *batch, optimizer, scheduler, ctx)  # tokenising the batch included
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib() - rss0
    n_params = sum(p.numel() for p in params)
    encoded = ctx.pairs.encode(*batches[1])
    return {
        "method": args.worker,
        "examples_per_s": args.batch_size / float(np.median(times)),
        "step_seconds_median": float(np.median(times)),
        "peak_mib": peak,
        "trainable_params": n_params,
        "device": str(device),
        "pairs_per_step": int(encoded.input_ids.shape[0]),
        "tokens_per_pair": int(encoded.input_ids.shape[1]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, one measurement) and print a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--data", default="auto")
    p.add_argument("--tasks", type=int, default=10, help="T retraining tasks")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.1, help="adapter and head dropout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest)")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", choices=["sr", "lora-ml", "last-layer-ml"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    passthrough = [
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--json")
    ]
    if args.json is not None:  # drop the value that followed --json
        passthrough = [a for a in passthrough if a != str(args.json)]
    runs: dict[str, list[dict]] = {"sr": [], "lora-ml": []}
    mem_runs: dict[str, list[dict]] = {"sr": [], "lora-ml": []}
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    # Memory runs: a fixed mmap threshold makes glibc return freed large blocks at once, so the
    # peak resident set tracks live tensors rather than heap fragmentation (which otherwise
    # differs run to run by hundreds of MiB). Speed runs use the default allocator.
    mem_env = {**env, "MALLOC_MMAP_THRESHOLD_": "131072"}

    def work(method: str, environ: dict) -> dict:
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, "--worker", method],
            capture_output=True,
            text=True,
            env=environ,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    for r in range(args.rounds):
        for method in ("sr", "lora-ml"):
            res = work(method, env)
            runs[method].append(res)
            print(f"round {r} {method}: {res['examples_per_s']:.3f} examples/s", flush=True)
    for method in ("sr", "lora-ml"):
        res = work(method, mem_env)
        mem_runs[method].append(res)
        print(f"memory run {method}: peak {res['peak_mib']:.0f} MiB", flush=True)
    best = {m: max(v, key=lambda x: x["examples_per_s"]) for m, v in runs.items()}
    peak = {m: min(x["peak_mib"] for x in v) for m, v in mem_runs.items()}
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "platform": platform.platform(),
        "command": "benchmarks/bench_empirical.py " + " ".join(passthrough),
        "best": best,
        "peak_mib": peak,
        "speed_ratio_lora_ml_over_sr": best["lora-ml"]["examples_per_s"]
        / best["sr"]["examples_per_s"],
        "memory_ratio_lora_ml_over_sr": peak["lora-ml"] / peak["sr"],
        "runs": runs,
        "memory_runs": mem_runs,
    }
    print(
        f"LoRA-ML / SR examples/s: {summary['speed_ratio_lora_ml_over_sr']:.3f} "
        f"(target >= 0.85); peak memory ratio {summary['memory_ratio_lora_ml_over_sr']:.3f} "
        f"(target <= 1.10)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
