"""The GPU check: what only a GPU can show, measured in one run of at most 10 minutes on one H100 / H200.

    make gpu-check                                      # python bench/gpu_check.py --write, on a CUDA GPU
    .venv/bin/python bench/gpu_check.py --smoke         # the same code paths at tiny sizes on the CPU (in the tests)

Five parts, each a table of absolute times and ratios taken in this process (candidates interleaved round-robin,
medians; ``bench/benchmarks_md.interleaved_medians``), with the device's name:

1. ``lm``: ``MatrixTrainer.training_step`` of a random-init Llama of 7B-like width (hidden 4096, 2 layers, vocab
   32000, batch 2 x 2048 tokens, bf16, SDPA attention), CE only vs CE + ``head`` / ``relation`` / ``alignment`` at
   the default weight: step time, the matrix loss alone as a share of the CE step, peak memory (``bench/lm_step.py``).
2. ``ssl``: one optimizer step of a random-init ViT-B/16 (224², batch 256, bf16 autocast) for Matrix-SSL ``exact``
   and ``official``, MEC, SimCLR, Barlow Twins and a BYOL-style baseline (the same EMA teacher and predictor,
   BYOL's normalised-MSE loss): the fair baseline for the methods with a teacher. Ratios to BYOL-style and to SimCLR.
3. ``clip``: one optimizer step of a ViT-B/32 + BERT-base-sized dual encoder (224², 77 tokens, batch 1024, bf16
   autocast), InfoNCE alone vs + the alignment term, + the covariance MCE, + both.
4. ``info``: ``torch.linalg.eigh``, ``info.mce`` (forward + backward) and ``info.feature_mce`` (forward + backward)
   at n = d in {256, 1024, 4096}, float32 and float64, on the GPU and on this machine's CPU: GPU speed-up, and the
   relative difference of the GPU value from the CPU one.
5. ``generation``: ``matrix-llm eval gsm8k`` on a small random-init Llama saved locally, ``--backend vllm`` vs the
   HF batched path on the same questions (questions/s); vLLM is skipped, and said so, where it does not import.

A part that fails (out of memory, a missing package) is recorded with its error and the others still run; the exit
status is then 1. ``--json`` (default outputs/gpu_check.json) gets every figure; ``--write`` puts the
``## GPU check`` section into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import clip_step  # noqa: E402
import lm_step  # noqa: E402
from benchmarks_md import BENCHMARKS_MD, interleaved_medians, write_section  # noqa: E402

SECTION = "## GPU check"
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
LLEMMA_RECIPE = REPO / "recipes" / "llemma-7b" / "gsm8k" / "mce.yaml"

# the sizes of the real check and of the smoke run (same code paths, tiny)
SIZES = {
    "full": {
        "lm": {"hidden": 4096, "layers": 2, "vocab": 32000, "seq": 2048, "batch": 2, "repeats": 5},
        "ssl": {
            "image": 224,
            "patch": 16,
            "hidden": 768,
            "layers": 12,
            "heads": 12,
            "projector": 2048,
            "batch": 256,
            "rounds": 3,
        },
        "clip": {
            "image": 224,
            "patch": 32,
            "hidden": 768,
            "layers": 12,
            "heads": 12,
            "seq": 77,
            "vocab": 30522,
            "projection": 512,
            "batch": 1024,
            "rounds": 3,
        },
        "info": {"sizes": [256, 1024, 4096], "rounds": 3},
        "generation": {"n": 64, "max_new_tokens": 128, "hidden": 512, "layers": 4, "batch_size": 64},
    },
    "smoke": {
        "lm": {"hidden": 32, "layers": 1, "vocab": 128, "seq": 32, "batch": 2, "repeats": 1},
        "ssl": {
            "image": 16,
            "patch": 8,
            "hidden": 32,
            "layers": 1,
            "heads": 2,
            "projector": 32,
            "batch": 8,
            "rounds": 1,
        },
        "clip": {
            "image": 16,
            "patch": 8,
            "hidden": 32,
            "layers": 1,
            "heads": 2,
            "seq": 8,
            "vocab": 64,
            "projection": 16,
            "batch": 8,
            "rounds": 1,
        },
        "info": {"sizes": [8, 16], "rounds": 1},
        "generation": {"n": 4, "max_new_tokens": 4, "hidden": 32, "layers": 1, "batch_size": 4},
    },
}
SSL_METHODS = (
    ("matrix_ssl exact", "matrix_ssl", "exact"),
    ("matrix_ssl official", "matrix_ssl", "official"),
    ("mec", "mec", "exact"),
    ("simclr", "simclr", "exact"),
    ("barlow_twins", "barlow_twins", "exact"),
    ("byol-style", None, None),
)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str, dtype: str):
    enabled = dtype == "bfloat16"
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def _peak_mb(device: str, fn) -> float | None:
    """Peak allocated memory of two calls of ``fn`` above what was allocated before (CUDA only)."""
    if device != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for i in range(2):
        fn(i)
    _sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _rows(times: dict[str, float], peaks: dict[str, float | None], baselines: tuple[str, ...]) -> list[dict]:
    return [
        {
            "variant": name,
            "ms": 1000 * t,
            **{f"vs {b}": t / times[b] for b in baselines},
            "peak_mb": peaks.get(name),
        }
        for name, t in times.items()
    ]


# -- 1. LM step ------------------------------------------------------------------------------------------------


def lm_part(s: dict, device: str, dtype: str) -> dict:
    import yaml

    recipe = yaml.safe_load(LLEMMA_RECIPE.read_text())  # matrix_max_tokens as the Llemma-7B recipe bounds it
    cfg = {**s, "device": device, "dtype": dtype, "max_tokens": recipe["matrix_max_tokens"]}
    # peak memory on the GPU (the allocator's peak); the CPU's fresh-process RSS probe is lm_step.py's own
    rows = lm_step.run_config(cfg, s["repeats"], memory=device == "cuda")
    return {"config": cfg, "attention": _attention(cfg), "rows": rows}


def _attention(cfg: dict) -> str:
    model, _ = lm_step.build_model_and_batch({**cfg, "layers": 1, "hidden": 64, "vocab": 64, "seq": 8})
    return str(model.config._attn_implementation)


# -- 2. SSL step -----------------------------------------------------------------------------------------------


def _byol_loss(out) -> torch.Tensor:
    """BYOL's loss: normalised MSE (2 - 2 cos) of each view's prediction against the teacher's other view."""
    import torch.nn.functional as F

    def nmse(p, z):
        return (2 - 2 * F.cosine_similarity(p.float(), z.float().detach(), dim=-1)).mean()

    return nmse(out.z1, out.p2) + nmse(out.z2, out.p1)


def ssl_part(s: dict, device: str, dtype: str) -> dict:
    from transformers import ViTConfig, ViTModel

    from matrix_llm.data.augment import TwoViewAugment
    from matrix_llm.models.ssl import SSLModel
    from matrix_llm.modes import SSLObjective
    from matrix_llm.modes.ssl.methods import METHODS

    images = torch.rand(s["batch"], 3, s["image"], s["image"], generator=torch.Generator().manual_seed(0))
    images = images.to(device)

    def stepper(method: str | None, preset: str | None):
        torch.manual_seed(0)
        config = ViTConfig(
            image_size=s["image"],
            patch_size=s["patch"],
            hidden_size=s["hidden"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            intermediate_size=4 * s["hidden"],
        )
        teacher = method is None or METHODS[method].teacher
        model = SSLModel(
            ViTModel(config),
            TwoViewAugment(size=s["image"], channels=3),
            projector_hidden=s["projector"],
            projector_dim=s["projector"],
            predictor_hidden=(4 * s["hidden"] if teacher else 0),
            teacher=teacher,
        ).to(device)
        objective = SSLObjective(method=method, preset=preset, metrics_steps=0) if method else None
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(i: int) -> None:
            with _autocast(device, dtype):
                if objective is None:
                    loss = _byol_loss(model(pixel_values=images, augment_step=i))
                else:
                    loss = objective(model, {"pixel_values": images}, step=i).batch_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if teacher:
                model.update_teacher(0.99)
            _sync(device)

        return step

    steppers = {name: stepper(method, preset) for name, method, preset in SSL_METHODS}
    times = interleaved_medians(steppers, rounds=s["rounds"], calls=2)
    peaks = {name: _peak_mb(device, fn) for name, fn in steppers.items()}
    return {"config": s, "rows": _rows(times, peaks, ("byol-style", "simclr"))}


# -- 3. CLIP step (the variants of bench/clip_step.py) ---------------------------------------------------------


def clip_part(s: dict, device: str, dtype: str) -> dict:
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    from matrix_llm.modes import CLIPObjective

    g = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(5, s["vocab"], (s["batch"], s["seq"]), generator=g).to(device),
        "attention_mask": torch.ones(s["batch"], s["seq"], dtype=torch.long, device=device),
        "pixel_values": torch.rand(s["batch"], 3, s["image"], s["image"], generator=g).to(device),
    }
    tower = dict(
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        intermediate_size=4 * s["hidden"],
    )

    def stepper(weights: dict):
        torch.manual_seed(0)
        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            ViTConfig(image_size=s["image"], patch_size=s["patch"], **tower),
            BertConfig(vocab_size=s["vocab"], max_position_embeddings=max(s["seq"], 32), **tower),
            projection_dim=s["projection"],
        )
        model = VisionTextDualEncoderModel(config=config).to(device)
        objective = CLIPObjective(metrics_steps=0, **weights)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(i: int) -> None:
            with _autocast(device, dtype):
                loss = objective(model, inputs, step=i + 1).batch_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)

        return step

    steppers = {name: stepper(weights) for name, weights in clip_step.VARIANTS.items()}
    times = interleaved_medians(steppers, rounds=s["rounds"], calls=1)
    peaks = {name: _peak_mb(device, fn) for name, fn in steppers.items()}
    return {"config": s, "rows": _rows(times, peaks, ("infonce",))}


# -- 4. info on the GPU vs the CPU -----------------------------------------------------------------------------


def _info_ops(d: int, dtype: torch.dtype, device: str) -> dict:
    """name -> (call, value) for the three operations at n = d on ``device``; the inputs are the same numbers on
    every device (drawn on the CPU in float64, then moved)."""
    from matrix_llm import info

    g = torch.Generator().manual_seed(d)
    z1, z2 = (torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 for _ in range(2))
    p = (z1.T @ z1 + torch.eye(d, dtype=torch.float64)).to(device, dtype)
    q0 = (z2.T @ z2 + torch.eye(d, dtype=torch.float64)).to(device, dtype)
    za, zb = z1.to(device, dtype), z2.to(device, dtype)

    def eigh(i: int = 0):
        return torch.linalg.eigh(p).eigenvalues.sum()

    def mce(i: int = 0):
        q = q0.clone().requires_grad_()
        value = info.mce(p, q)
        value.backward()
        return value

    def feature_mce(i: int = 0):
        z = zb.clone().requires_grad_()
        value = info.feature_mce(za, z, lamb=1.0, mu=1.0)
        value.backward()
        return value

    return {"eigh": eigh, "mce": mce, "feature_mce": feature_mce}


def info_part(s: dict, device: str, dtype: str) -> dict:
    rows = []
    for d in s["sizes"]:
        for precision in (torch.float32, torch.float64):
            here = _info_ops(d, precision, device)
            cpu = _info_ops(d, precision, "cpu")

            def timed(fn, dev):
                def call(i: int) -> None:
                    fn(i)
                    _sync(dev)

                return call

            rounds = s["rounds"] if d < 4096 else 1  # the CPU's 4096 float64 cases take seconds each
            for op in here:
                times = interleaved_medians(
                    {"device": timed(here[op], device), "cpu": timed(cpu[op], "cpu")}, rounds=rounds, calls=1
                )
                a, b = float(here[op]().detach()), float(cpu[op]().detach())
                rows.append(
                    {
                        "op": op,
                        "n=d": d,
                        "dtype": str(precision).removeprefix("torch."),
                        "device_ms": 1000 * times["device"],
                        "cpu_ms": 1000 * times["cpu"],
                        "speedup": times["cpu"] / times["device"],
                        "rel_diff": abs(a - b) / max(abs(b), 1e-30),
                    }
                )
    return {"config": s, "cpu_threads": torch.get_num_threads(), "rows": rows}


# -- 5. generation: vLLM vs HF ---------------------------------------------------------------------------------


def _eval(model_dir: Path, backend: str, s: dict, out: Path, device: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "matrix_llm.cli",
        "eval",
        "gsm8k",
        "--model",
        str(model_dir),
        "--data",
        str(GSM8K),
    ]
    cmd += ["--prompt", "qa", "--limit", str(s["n"]), "--max_new_tokens", str(s["max_new_tokens"])]
    cmd += [
        "--batch_size",
        str(s["batch_size"]),
        "--backend",
        backend,
        "--output_dir",
        str(out),
        "--no_progress",
    ]
    cmd += ["--device", device] if backend == "hf" else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"eval gsm8k --backend {backend} failed:\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    completions = [
        json.loads(line)["completion"] for line in (out / "samples.jsonl").read_text().splitlines()
    ]
    return {
        "seconds": results["generation_seconds"],
        "questions_per_s": results["questions_per_second"],
    }, completions


def generation_part(s: dict, device: str, dtype: str) -> dict:
    import importlib.util

    from matrix_llm.models.tiny import build_llama, build_tokenizer

    corpus = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()[:2000]]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tok = build_tokenizer(
            [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in corpus], vocab_size=1024
        )
        torch.manual_seed(0)
        model = build_llama(
            tok, hidden_size=s["hidden"], num_layers=s["layers"], num_heads=max(1, s["hidden"] // 64)
        )
        model.save_pretrained(root / "model")
        tok.save_pretrained(root / "model")
        hf, hf_text = _eval(root / "model", "hf", s, root / "hf", device)
        result = {"config": s, "hf": hf, "vllm": None}
        if importlib.util.find_spec("vllm") is None or device != "cuda":
            result["vllm_skipped"] = (
                "vLLM is not installed" if device == "cuda" else "no GPU: vLLM runs on a GPU"
            )
            return result
        vllm, vllm_text = _eval(root / "model", "vllm", s, root / "vllm", device)
        result["vllm"] = vllm
        result["vllm_vs_hf"] = vllm["questions_per_s"] / hf["questions_per_s"]
        result["same_completions"] = sum(a == b for a, b in zip(hf_text, vllm_text, strict=True)) / len(
            hf_text
        )
        return result


PARTS = {"lm": lm_part, "ssl": ssl_part, "clip": clip_part, "info": info_part, "generation": generation_part}


# -- report ----------------------------------------------------------------------------------------------------


def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(_fmt(r.get(key), spec) if spec else str(r.get(key)) for _, key, spec in columns)
            + " |"
        )
    return lines


def _precision(report: dict) -> str:
    return "bf16 autocast" if report["dtype"] == "bfloat16" else report["dtype"]


def render(report: dict, command: str) -> str:
    lines = [
        SECTION,
        "",
        (
            f"Written by `{command}` on {report['date']}: {report['device_name']} (torch {report['torch']}, CUDA "
            f"{report['cuda']}), {report['seconds']:.0f} s in all. Every ratio is between figures of this run."
        ),
        "",
    ]
    parts = report["parts"]
    if "lm" in parts:
        c = parts["lm"]["config"]
        lines += [
            (
                f"**LM step** (`MatrixTrainer.training_step`): random Llama, hidden {c['hidden']}, {c['layers']} layers, "
                f"vocab {c['vocab']}, batch {c['batch']} x {c['seq']}, {c['dtype']}, attention "
                f"`{parts['lm']['attention']}`, matrix_max_tokens {c['max_tokens']}, default weight."
            ),
            "",
            *_table(
                parts["lm"]["rows"],
                [
                    ("variant", "variant", ""),
                    ("step ms", "ms", ".1f"),
                    ("vs CE", "ratio", ".3f"),
                    ("matrix loss alone ms", "loss_ms", ".1f"),
                    ("share of the CE step", "loss_share", ".3f"),
                    ("peak MB", "mem_mb", ".0f"),
                ],
            ),
            "",
        ]
    if "ssl" in parts:
        c = parts["ssl"]["config"]
        lines += [
            (
                f"**SSL step** (one AdamW step, two views, teacher update): ViT {c['hidden']} x {c['layers']} layers, "
                f"patch {c['patch']}, {c['image']}², batch {c['batch']}, {_precision(report)}."
            ),
            "",
            *_table(
                parts["ssl"]["rows"],
                [
                    ("method", "variant", ""),
                    ("step ms", "ms", ".1f"),
                    ("vs BYOL-style", "vs byol-style", ".3f"),
                    ("vs SimCLR", "vs simclr", ".3f"),
                    ("peak MB", "peak_mb", ".0f"),
                ],
            ),
            "",
        ]
    if "clip" in parts:
        c = parts["clip"]["config"]
        lines += [
            (
                f"**CLIP step**: ViT {c['hidden']} x {c['layers']} (patch {c['patch']}, {c['image']}²) + BERT-sized text "
                f"tower ({c['hidden']} x {c['layers']}, {c['seq']} tokens), projection {c['projection']}, batch "
                f"{c['batch']}, {_precision(report)}."
            ),
            "",
            *_table(
                parts["clip"]["rows"],
                [
                    ("variant", "variant", ""),
                    ("step ms", "ms", ".1f"),
                    ("vs InfoNCE", "vs infonce", ".3f"),
                    ("peak MB", "peak_mb", ".0f"),
                ],
            ),
            "",
        ]
    if "info" in parts:
        lines += [
            (
                f"**info** (forward; `mce` and `feature_mce` with backward) on the device vs this machine's CPU "
                f"({parts['info']['cpu_threads']} threads); rel. diff is the device value against the CPU one."
            ),
            "",
            *_table(
                parts["info"]["rows"],
                [
                    ("op", "op", ""),
                    ("n = d", "n=d", ""),
                    ("dtype", "dtype", ""),
                    ("device ms", "device_ms", ".2f"),
                    ("CPU ms", "cpu_ms", ".1f"),
                    ("speed-up", "speedup", ".1f"),
                    ("rel. diff", "rel_diff", ".1e"),
                ],
            ),
            "",
        ]
    if "generation" in parts:
        g = parts["generation"]
        c = g["config"]
        vllm = (
            f"vLLM {g['vllm']['questions_per_s']:.2f} questions/s ({g['vllm_vs_hf']:.2f}x HF; "
            f"{100 * g['same_completions']:.0f}% identical completions)"
            if g["vllm"]
            else f"vLLM not run: {g['vllm_skipped']}"
        )
        lines += [
            (
                f"**eval gsm8k** ({c['n']} questions, {c['max_new_tokens']} new tokens, random Llama {c['hidden']} x "
                f"{c['layers']}): HF batched (batch {c['batch_size']}) {g['hf']['questions_per_s']:.2f} questions/s; {vllm}."
            ),
            "",
        ]
    for name, error in report["errors"].items():
        lines += [f"**{name}: failed** — `{error.splitlines()[-1]}`", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not figures"
    )
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--json", type=Path, default=REPO / "outputs" / "gpu_check.json")
    parser.add_argument("--write", action="store_true", help="write the section into --output")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: the check measures a GPU (--smoke runs its code paths on the CPU)")
    device = "cpu" if args.smoke else "cuda"
    dtype = "float32" if args.smoke else "bfloat16"
    sizes = SIZES["smoke" if args.smoke else "full"]
    start = time.perf_counter()
    report = {
        "date": str(_dt.date.today()),
        "device_name": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dtype": dtype,
        "smoke": args.smoke,
        "parts": {},
        "errors": {},
    }
    for name in args.parts:
        t0 = time.perf_counter()
        try:
            report["parts"][name] = PARTS[name](sizes[name], device, dtype)
        except Exception:  # one part's failure (e.g. out of memory) must not lose the others' figures
            report["errors"][name] = traceback.format_exc()
            print(report["errors"][name], file=sys.stderr, flush=True)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    report["seconds"] = time.perf_counter() - start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    text = render(report, "python bench/gpu_check.py" + (" --smoke" if args.smoke else ""))
    print(text)
    if args.write:
        write_section(SECTION, text, args.output)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
