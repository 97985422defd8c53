"""Benchmark GSM8K generation: batched (left padded, longest first) vs one question at a time, same model/items.

Model: a randomly initialised Llama from :func:`matrix_llm.models.tiny.build_llama` (default hidden 256, 4 layers,
4 heads, a 1024-token byte-level BPE trained on GSM8K train text), float32, on the CPU (or the GPU when one is
there; ``--device``). Items: the first ``--n`` questions of the real GSM8K test split, ``qa`` prompt (lm-eval's
``Question: ...\\nAnswer:``) with its stop strings, greedy, ``--max_new_tokens`` tokens. Random weights rarely
emit EOS or a stop string, so nearly every completion runs to ``max_new_tokens`` in both modes: the two modes do
the same work, and the script checks that they return identical completions.

Both modes run in this process, interleaved (single, batched, single, batched, ...) after one warm-up; the
figures are medians over ``--repeats``. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per run; on the
CPU (where RSS never shrinks inside a process) the peak RSS of a fresh child process that builds the model, resets
its peak-RSS counter (``/proc/self/clear_refs``) and runs only that mode; "of which generation" is that peak
minus the RSS just before generating.

Run:   .venv/bin/python bench/generate.py                 (n=16, max_new_tokens=32, batch 8, 3 repeats)
       .venv/bin/python bench/generate.py --write         (also replace the "## GSM8K generation" section of
                                                            BENCHMARKS.md, leaving other sections alone)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks_md import write_section  # noqa: E402

from matrix_llm.data.gsm8k import get_eval_prompt  # noqa: E402
from matrix_llm.models.tiny import build_llama, build_tokenizer  # noqa: E402
from matrix_llm.modes.lm.evaluate import build_prompts  # noqa: E402
from matrix_llm.modes.lm.generation import generate  # noqa: E402

SECTION = "## GSM8K generation"
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


class CudaPeak:
    """CUDA allocator peak of a block, above the memory allocated when it starts."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _child_memory(argv: list[str], batch_size: int) -> tuple[int, int]:
    """(RSS after building the model, peak RSS during generation), bytes, of a fresh process running one mode.

    The child resets its peak-RSS counter after the build (``/proc/self/clear_refs``), so the peak covers the
    generation only.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--_child", str(batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    return probe["rss_kb"] * 1024, probe["hwm_kb"] * 1024


def _load_questions(n: int) -> tuple[list[dict], list[str]]:
    test = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text().splitlines()[:n]]
    train = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()[:2000]]
    corpus = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in train]
    return test, corpus


def _setup(args):
    torch.manual_seed(0)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    items, corpus = _load_questions(args.n)
    tok = build_tokenizer(corpus, vocab_size=args.vocab_size)
    model = (
        build_llama(
            tok,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            num_heads=args.num_heads,
            max_position_embeddings=1024,
        )
        .to(device)
        .eval()
    )
    prompts = build_prompts([it["question"] for it in items], prompt="qa")
    return device, tok, model, prompts, get_eval_prompt("qa").stop


def run(args, argv: list[str]) -> dict:
    load_start = os.getloadavg()[0]
    device, tok, model, prompts, stop = _setup(args)
    n_params = sum(p.numel() for p in model.parameters())

    def once(batch_size: int):
        if device.type == "cuda":
            torch.cuda.synchronize()
        with CudaPeak(device) as mem:
            out = generate(
                model,
                tok,
                prompts,
                max_new_tokens=args.max_new_tokens,
                batch_size=batch_size,
                stop_strings=stop,
                progress=False,
            )
        return out, mem.peak

    generate(
        model, tok, prompts[: min(4, len(prompts))], max_new_tokens=8, batch_size=2, progress=False
    )  # warm-up
    runs = {1: [], args.batch_size: []}
    outputs = {}
    for _ in range(args.repeats):
        for bs in (1, args.batch_size):
            out, peak = once(bs)
            runs[bs].append((out.seconds, sum(out.num_new_tokens), peak))
            outputs[bs] = out.completions
    identical = outputs[1] == outputs[args.batch_size]

    base = {bs: 0 for bs in runs}
    if device.type == "cpu":  # RSS never shrinks within a process: measure each mode in a fresh one
        probes = {bs: _child_memory(argv, bs) for bs in runs}
        base = {bs: probes[bs][0] for bs in runs}
        peaks = {bs: probes[bs][1] for bs in runs}
    else:
        peaks = {bs: max(r[2] for r in runs[bs]) for bs in runs}

    def summary(bs: int) -> dict:
        secs = statistics.median(r[0] for r in runs[bs])
        toks = runs[bs][0][1]
        return {
            "batch_size": bs,
            "seconds": secs,
            "questions_per_s": len(prompts) / secs,
            "tokens_per_s": toks / secs,
            "new_tokens": toks,
            "peak_mem_mb": peaks[bs] / 2**20,
            "extra_mem_mb": (peaks[bs] - base[bs]) / 2**20,
        }

    single, batched = summary(1), summary(args.batch_size)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "n_params": n_params,
        "single": single,
        "batched": batched,
        "speedup": batched["questions_per_s"] / single["questions_per_s"],
        "mem_ratio": batched["peak_mem_mb"] / single["peak_mem_mb"],
        "extra_mem_ratio": batched["extra_mem_mb"] / single["extra_mem_mb"]
        if single["extra_mem_mb"] > 0
        else None,
        "identical": identical,
        "load_average": (load_start, os.getloadavg()[0]),
        "args": vars(args),
    }


def _ratio(x) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def render(res: dict, command: str) -> str:
    a, s, b = res["args"], res["single"], res["batched"]
    mem_kind = (
        "CUDA allocator peak above the memory allocated before the run"
        if res["device"].startswith("cuda")
        else "peak RSS of a fresh process running only that mode; the peak counter is reset after the model is built"
    )
    lines = [
        SECTION,
        "",
        (
            f"Written by `bench/generate.py` on {_dt.date.today().isoformat()} (torch {torch.__version__}, "
            f"{res['device']}: {res['device_name']}, {res['threads']} torch threads, {res['cpus']} CPUs)."
        ),
        "",
        (
            f"Model: randomly initialised Llama ({res['n_params'] / 1e6:.1f} M parameters: hidden {a['hidden_size']}, "
            f"{a['num_layers']} layers, {a['num_heads']} heads, byte-level BPE vocabulary {a['vocab_size']}), "
            "float32. Items: the first "
            f"{a['n']} GSM8K test questions, `qa` prompt and stop strings, greedy, max_new_tokens={a['max_new_tokens']} "
            "(random weights: almost every completion runs to the limit in both modes, so both do the same work). "
            f"Median of {a['repeats']} interleaved runs after a warm-up, in one process."
        ),
        "",
        "| mode | questions/s | generated tokens/s | peak memory (MB) | of which generation (MB) |",
        "|---|---|---|---|---|",
        (
            f"| one at a time (batch 1) | {s['questions_per_s']:.2f} | {s['tokens_per_s']:.0f} | "
            f"{s['peak_mem_mb']:.0f} | {s['extra_mem_mb']:+.0f} |"
        ),
        (
            f"| batched (batch {b['batch_size']}, left padded, longest first) | {b['questions_per_s']:.2f} | "
            f"{b['tokens_per_s']:.0f} | {b['peak_mem_mb']:.0f} | {b['extra_mem_mb']:+.0f} |"
        ),
        "",
        (
            f"- Batched / one at a time: **{res['speedup']:.2f}x** questions per second; peak memory "
            f"{res['mem_ratio']:.2f}x, generation's share {_ratio(res['extra_mem_ratio'])} ({mem_kind})."
        ),
        f"- Completions identical between the two modes: **{'yes' if res['identical'] else 'NO'}**.",
        (
            f"- The machine is shared with other jobs and noisy (1-minute load average {res['load_average'][0]:.1f} at "
            f"the start, {res['load_average'][1]:.1f} at the end, on {res['cpus']} CPUs): "
            "the ratio is the figure to read, absolute CPU throughputs are indicative only."
        ),
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="GSM8K test questions")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden_size", type=int, default=256)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--vocab_size", type=int, default=1024)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--write", action="store_true", help="update the GSM8K generation section of BENCHMARKS.md"
    )
    p.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child is not None:  # memory probe: build, run one mode once, exit
        device, tok, model, prompts, stop = _setup(args)
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        rss = _status_kb("VmRSS")
        generate(
            model,
            tok,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args._child,
            stop_strings=stop,
            progress=False,
        )
        print(json.dumps({"rss_kb": rss, "hwm_kb": _status_kb("VmHWM")}))
        return 0
    write, output = args.write, args.output
    del args.write, args.output, args._child
    child_argv = [a for a in argv if a != "--write"]
    res = run(args, child_argv)
    command = ".venv/bin/python bench/generate.py " + " ".join(argv)
    text = render(res, command.strip())
    print(text)
    if write:
        write_section(SECTION, text, output)
        print(f"wrote {SECTION!r} to {output}")
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
