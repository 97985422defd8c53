"""Step time and peak memory of CE-only vs CE + each matrix-loss formulation, same model and batch, one process.

    .venv/bin/python bench/lm_step.py                    # CPU: small Llama (hidden 256) and hidden 2048 (2 layers)
    .venv/bin/python bench/lm_step.py --quick            # a fast smoke run
    .venv/bin/python bench/lm_step.py --write            # also write the `## LM training step` section of BENCHMARKS.md
    python bench/lm_step.py --device cuda --hidden 2048 --layers 16 --vocab 32000 --seq 512 --batch 4 --dtype bfloat16

What is timed is ``MatrixTrainer.training_step`` (forward with the hidden-state hook, LM loss, matrix loss,
backward), the exact code path of training, for one trainer per variant on the same model and the same batch;
variants are interleaved round-robin and the median is reported, so machine noise hits all of them alike.
Ratios are against the CE-only trainer (``matrix_loss_type=none`` with diagnostics off). Peak memory: on CUDA
``max_memory_allocated`` per variant; on CPU the growth of the peak RSS (Linux ``VmHWM``, reset after the
model is built) of a fresh subprocess that runs two steps of only that variant.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchmarks_md import write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## LM training step"
WHOLE_STEP_CAVEAT = (
    " Whole-step ratios move by several percent between runs (for `head` at hidden 2048 earlier runs gave"
    " 1.01x, 1.10x and 1.08x), so the column 'matrix loss alone' (the loss's forward + backward timed by"
    " itself on the same sizes, as a share of the CE step) is the steadier figure for small overheads. CPU"
    " peak memory is the growth of a fresh process's peak RSS: allocator reuse makes it noisy (ratios below"
    " 1 are noise). The entropy/erank diagnostics are off in every variant."
)
# name -> MatrixTrainingArguments overrides; the entropy/erank diagnostics (every `matrix_metrics_steps`, by
# default every logging step) are off in all variants, so what is timed is the matrix loss itself
VARIANTS = {
    "ce": {"matrix_loss_type": "none", "matrix_metrics_steps": 0},
    "ce+head": {"matrix_loss_type": "head", "matrix_metrics_steps": 0},
    "ce+relation": {"matrix_loss_type": "relation", "matrix_metrics_steps": 0},
    "ce+alignment": {"matrix_loss_type": "alignment", "matrix_metrics_steps": 0},
}


def build_model_and_batch(cfg: dict):
    """A random Llama and one batch; they depend only on ``cfg`` (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, cfg["hidden"] // 64)
    config = LlamaConfig(
        vocab_size=cfg["vocab"],
        hidden_size=cfg["hidden"],
        intermediate_size=4 * cfg["hidden"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=cfg["seq"],
    )
    model = LlamaForCausalLM(config).to(device=cfg["device"], dtype=getattr(torch, cfg["dtype"]))
    model.train()
    ids = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), device=cfg["device"])
    labels = ids.clone()
    labels[:, : cfg["seq"] // 4] = -100  # a prompt: the matrix loss sees the completion tokens only
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def build_trainer(cfg: dict, variant: str, model):
    from matrix_llm.modes.lm.config import LMConfig
    from matrix_llm.trainer import MatrixTrainer

    args = LMConfig(
        output_dir=str(REPO / "outputs" / "bench_lm_step"),
        report_to="none",
        use_cpu=cfg["device"] == "cpu",
        matrix_loss_weight=0.1,
        matrix_max_tokens=cfg["max_tokens"],
        bf16=cfg["dtype"] == "bfloat16",
        **VARIANTS[variant],
    )
    return MatrixTrainer(model=model, args=args)


def step(trainer, model, batch, device: str) -> float:
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    start = time.perf_counter()
    trainer.training_step(model, dict(batch), num_items_in_batch=None)
    if device == "cuda":
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_variants(cfg: dict, repeats: int) -> dict[str, float]:
    """Median step seconds per variant, interleaved round-robin; one model and batch shared by all trainers."""
    model, batch = build_model_and_batch(cfg)
    trainers = {name: build_trainer(cfg, name, model) for name in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for name in VARIANTS:  # warm-up
        step(trainers[name], model, batch, cfg["device"])
    for _ in range(repeats):
        for name in VARIANTS:
            times[name].append(step(trainers[name], model, batch, cfg["device"]))
    return {name: statistics.median(v) for name, v in times.items()}


def peak_memory(cfg: dict, variant: str) -> float:
    """Peak memory in MB of a few steps of one variant (CUDA: allocator peak; CPU: fresh-process RSS delta)."""
    if cfg["device"] == "cuda":
        model, batch = build_model_and_batch(cfg)
        trainer = build_trainer(cfg, variant, model)
        step(trainer, model, batch, "cuda")
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(2):
            step(trainer, model, batch, "cuda")
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run(
        [sys.executable, __file__, "--_memory_child", json.dumps({**cfg, "variant": variant})],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(spec: str) -> None:
    """Peak RSS growth over two steps: the high-water mark is reset after the model is built (Linux
    ``clear_refs``), so what is measured is the step's own memory (activations, gradients, matrix loss)."""
    cfg = json.loads(spec)
    model, batch = build_model_and_batch(cfg)
    trainer = build_trainer(cfg, cfg["variant"], model)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _proc_status_mb("VmRSS")
    for _ in range(2):
        step(trainer, model, batch, "cpu")
    print(_proc_status_mb("VmHWM") - before)


def time_loss_alone(cfg: dict, variant: str, repeats: int = 15) -> float:
    """Median seconds of the matrix loss alone (``TokenMCELoss`` forward + backward to the hidden states) on
    random token features of the benchmark's sizes: the part of the step the variant adds, without the
    step-to-step noise of a whole training step."""
    from matrix_llm.losses.token import TokenMCELoss

    loss = TokenMCELoss(
        formulation=VARIANTS[variant]["matrix_loss_type"], max_tokens=cfg["max_tokens"], diagnostics=False
    )  # as the LM objective builds it
    dtype, device = getattr(torch, cfg["dtype"]), cfg["device"]
    tokens = cfg["batch"] * (cfg["seq"] * 3 // 4 - 1)
    weight = torch.randn(cfg["vocab"], cfg["hidden"], device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        hidden = torch.randn(tokens, cfg["hidden"], device=device, dtype=dtype, requires_grad=True)
        labels = torch.randint(0, cfg["vocab"], (tokens,), device=device)
        logits = (hidden @ weight.T).detach().requires_grad_()
        start = time.perf_counter()
        loss(hidden, labels, weight, logits).total.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_config(cfg: dict, repeats: int, *, memory: bool = True) -> list[dict]:
    """One row per variant: step time, its ratio to CE, the matrix loss alone, and (``memory``) peak memory."""
    times = time_variants(cfg, repeats)
    rows = []
    for name, seconds in times.items():
        alone = time_loss_alone(cfg, name) if name != "ce" else 0.0
        rows.append(
            {
                "variant": name,
                "ms": 1000 * seconds,
                "ratio": seconds / times["ce"],
                "loss_ms": 1000 * alone,
                "loss_share": alone / times["ce"],
                "mem_mb": peak_memory(cfg, name) if memory else None,
            }
        )
    return rows


def table(cfg: dict, rows: list[dict]) -> str:
    base_mem = rows[0]["mem_mb"]
    lines = [
        (
            f"Model: Llama, hidden {cfg['hidden']}, {cfg['layers']} layers, vocab {cfg['vocab']}, {cfg['dtype']}; batch "
            f"{cfg['batch']} x {cfg['seq']} tokens (last 3/4 are completion: T = {cfg['batch'] * (cfg['seq'] * 3 // 4 - 1)} "
            f"tokens, sub-sampled to matrix_max_tokens={cfg['max_tokens']}); {cfg['repeats']} interleaved repeats."
        ),
        "",
        (
            "| variant | step ms (median) | step time vs CE | matrix loss alone ms | matrix loss alone / CE step "
            "| peak memory MB | memory vs CE |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem_ratio = r["mem_mb"] / base_mem if base_mem > 0 else float("nan")
        lines.append(
            f"| {r['variant']} | {r['ms']:.0f} | {r['ratio']:.3f}x | {r['loss_ms']:.0f} | "
            f"{100 * r['loss_share']:.1f}% | {r['mem_mb']:.0f} | {mem_ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hidden", type=int, nargs="*", default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max_tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="hidden 128 only, 2 repeats")
    parser.add_argument("--write", action="store_true", help="write the section in BENCHMARKS.md")
    parser.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory_child:
        _memory_child(args._memory_child)
        return 0
    # CPU default: a small model at 4 layers and the hidden size of the target (2048) at 2 layers
    plans = [
        (h, args.layers or (4 if h < 1024 else 2))
        for h in (args.hidden or ([128] if args.quick else [256, 2048]))
    ]
    repeats = 2 if args.quick else args.repeats
    sections = [
        SECTION,
        "",
        (
            f"Written by `bench/lm_step.py` on {datetime.date.today()} ({platform.machine()}, torch {torch.__version__}, "
            f"device {args.device}, {torch.get_num_threads()} threads). Timed: `MatrixTrainer.training_step` "
            "(forward + hook + LM loss + matrix loss + backward) per variant on the same model and batch, interleaved; "
            "ratios are against CE only in the same process. The CPU is shared and noisy: read the ratios, not the "
            "absolute times." + WHOLE_STEP_CAVEAT
        ),
        "",
    ]
    for hidden, layers in plans:
        cfg = {
            "device": args.device,
            "dtype": args.dtype,
            "hidden": hidden,
            "layers": layers,
            "vocab": args.vocab,
            "seq": args.seq,
            "batch": args.batch,
            "max_tokens": args.max_tokens,
            "repeats": repeats,
        }
        rows = run_config(cfg, repeats)
        text = table(cfg, rows)
        if hidden >= 2048 and cfg["max_tokens"] == 512:
            head = next(r for r in rows if r["variant"] == "ce+head")
            text += (
                f"\n\nTarget (`head`, max_tokens 512, hidden >= 2048: at most +5% step time): whole step "
                f"{100 * (head['ratio'] - 1):+.1f}%, the loss alone {100 * head['loss_share']:.1f}% of the CE step."
            )
        print(text + "\n", flush=True)
        sections += [text, ""]
    command = "python bench/lm_step.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    sections += ["Command:", "", "```", command.strip(), "```"]
    if args.write:
        write_section(SECTION, "\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
