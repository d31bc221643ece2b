"""LoRA-ML retraining throughput and peak memory against SR, same model, same batches.

Each measurement runs in a fresh worker process (peak memory on CPU is the process's peak
resident set size, which only grows, so methods cannot share a process); workers alternate
SR, LoRA-ML, SR, LoRA-ML, ... for ``--rounds`` rounds. ``--batching`` lays the batches out as
a run does: ``interleaved`` (every batch mixes the tasks, the default) or ``per-task`` (one task
a batch, tasks in turn, as ``--preset paper`` and ``--preset power`` retrain; only the present
task's adapter and head rows move). A step is a full retraining step:
tokenising the batch, forward over B*K (context, candidate) pairs, K-way cross-entropy, backward,
gradient clipping, AdamW. A worker reports the median of its ``--steps`` timed steps (after one
warm-up step), in wall-clock seconds and in CPU seconds of the process (with one torch thread the
CPU time is the work done, and it moves less than the wall clock when other jobs share the
cores). The summary gives each method's median over rounds and the median over rounds of the
ratio LoRA-ML / SR measured in the same round (back-to-back workers).

FLOPs: one further step of each worker runs under ``torch.utils.flop_counter.FlopCounterMode``
(matrix products only), which gives the FLOP ratio LoRA-ML / SR, the bound a throughput ratio
could reach if every FLOP cost the same.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (model, optimizer state, activations);
on CPU the growth of the peak resident set size (``resource.getrusage``) from just before the
model is built to the end of the timed steps (model, optimizer state, activations, allocator
caches), in separate runs with a fixed glibc mmap threshold (see ``main``); the median over
``--mem-rounds`` runs.

``--profile DIR`` also writes, per method, a ``torch.profiler`` table of two steps (operators by
self CPU time) to ``DIR/profile-<method>.txt``.

Usage::

    .venv/bin/python benchmarks/bench_empirical.py [--model minilm] [--candidates 8]
        [--max-length 64] [--steps 6] [--rounds 3] [--json out.json] [--profile DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
        batching=args.batching,
    )
    split = load_split(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, tokenizer = load_encoder(args.model)
    ctx = _Context(
        cfg, split, PairTokenizer(tokenizer, args.max_length), device, StepBudget(), False
    )
    sizes = [len(t.train) for t in split.retrain]
    layout = M.per_task_batches if args.batching == "per-task" else M.interleaved_batches
    order = layout(sizes, args.batch_size, np.random.default_rng(0))
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
    # per-task batching: the present task's rows of the per-task parameters move, no others
    rows = M.task_parameters(model) if args.batching == "per-task" else []
    optimizer, scheduler = _optimizer(params, 5e-5, ctx, 10 * len(batches), task_params=rows)
    step = functools.partial(
        _step, optimizer=optimizer, scheduler=scheduler, ctx=ctx, where="bench"
    )
    step(model, *batches[0])  # warm-up (allocations, optimizer state)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for batch in batches[1:]:
        t0, c0 = time.perf_counter(), time.process_time()
        step(model, *batch)  # tokenising the batch included
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib() - rss0
    n_params = sum(p.numel() for p in params)
    encoded = ctx.pairs.encode(*batches[1])
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(model, *batches[1])
    if args.profile is not None:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[1:3]:
                step(model, *batch)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        args.profile.mkdir(parents=True, exist_ok=True)
        (args.profile / f"profile-{args.worker}.txt").write_text(table + "\n")
    return {
        "method": args.worker,
        "examples_per_s": args.batch_size / float(np.median(times)),
        "step_seconds_median": float(np.median(times)),
        "examples_per_cpu_s": args.batch_size / float(np.median(cpu_times)),
        "step_cpu_seconds_median": float(np.median(cpu_times)),
        "step_seconds": times,
        "step_cpu_seconds": cpu_times,
        "flops_per_step": int(counter.get_total_flops()),
        "peak_mib": peak,
        "trainable_params": n_params,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "pairs_per_step": int(encoded.input_ids.shape[0]),
        "tasks_per_batch": max(len(set(ids)) for _, ids in batches[1:]),
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
    p.add_argument(
        "--batching",
        choices=["interleaved", "per-task"],
        default="interleaved",
        help="batches mixing the tasks, or one task a batch (the paper preset's)",
    )
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.1, help="adapter and head dropout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mem-rounds", type=int, default=1, help="memory runs per method")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest)")
    p.add_argument("--json", type=Path)
    p.add_argument("--profile", type=Path, help="write torch.profiler tables to this folder")
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
            print(
                f"round {r} {method}: {res['examples_per_s']:.3f} examples/s, "
                f"{res['examples_per_cpu_s']:.3f} examples per CPU second",
                flush=True,
            )
    for _ in range(args.mem_rounds):
        for method in ("sr", "lora-ml"):
            res = work(method, mem_env)
            mem_runs[method].append(res)
            print(f"memory run {method}: peak {res['peak_mib']:.0f} MiB", flush=True)

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    speed = {
        key: {m: median([x[key] for x in v]) for m, v in runs.items()}
        for key in ("examples_per_s", "examples_per_cpu_s")
    }
    per_round = {
        key: [lm[key] / sr[key] for sr, lm in zip(runs["sr"], runs["lora-ml"], strict=True)]
        for key in ("examples_per_s", "examples_per_cpu_s")
    }
    peak = {m: median([x["peak_mib"] for x in v]) for m, v in mem_runs.items()}
    flops = {m: v[0]["flops_per_step"] for m, v in runs.items()}
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {_cpu_name()}",
        "platform": platform.platform(),
        "load_average_at_end": list(os.getloadavg()),
        "command": "benchmarks/bench_empirical.py " + " ".join(passthrough),
        "median_examples_per_s": speed["examples_per_s"],
        "median_examples_per_cpu_s": speed["examples_per_cpu_s"],
        "speed_ratio_lora_ml_over_sr": median(per_round["examples_per_s"]),
        "cpu_speed_ratio_lora_ml_over_sr": median(per_round["examples_per_cpu_s"]),
        "speed_ratios_per_round": per_round["examples_per_s"],
        "cpu_speed_ratios_per_round": per_round["examples_per_cpu_s"],
        "flops_per_step": flops,
        "flop_bound_speed_ratio": flops["sr"] / flops["lora-ml"],
        "peak_mib": peak,
        "memory_ratio_lora_ml_over_sr": peak["lora-ml"] / peak["sr"],
        "memory_ratios_per_round": [
            lm["peak_mib"] / sr["peak_mib"]
            for sr, lm in zip(mem_runs["sr"], mem_runs["lora-ml"], strict=True)
        ],
        "runs": runs,
        "memory_runs": mem_runs,
    }
    print(
        f"LoRA-ML / SR examples/s (median of per-round ratios): wall "
        f"{summary['speed_ratio_lora_ml_over_sr']:.3f}, CPU time "
        f"{summary['cpu_speed_ratio_lora_ml_over_sr']:.3f} (target >= 0.90; FLOP bound "
        f"{summary['flop_bound_speed_ratio']:.3f}); peak memory ratio "
        f"{summary['memory_ratio_lora_ml_over_sr']:.3f} (target <= 1.10)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
