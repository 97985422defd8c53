"""``matrix-llm eval gsm8k`` / ``eval rescore`` (the library is :mod:`matrix_llm.modes.lm.evaluate`; the
``eval`` dispatcher :mod:`matrix_llm.tools.eval`): GSM8K accuracy by generation, scored like lm-evaluation-harness.

    matrix-llm eval gsm8k --model PATH_OR_HUB_ID [--adapter PATH] --prompt {zero_shot_cot,fewshot5,cot8,...}
        [--max_new_tokens 512] [--batch_size 16] [--limit N] [--split test] [--data LOCAL_FILE_OR_DIR]
        [--fewshot_data TRAIN_FILE] [--output_dir DIR] [--backend hf|vllm|lm_eval] [--dtype auto|bfloat16|float32]
    matrix-llm eval rescore RUN_DIR/samples.jsonl [--output results.json]

Prompts, stop strings, answer extraction and normalisation all come from :mod:`matrix_llm.data.gsm8k` (the one
source of truth); generation from :mod:`matrix_llm.modes.lm.generation` (greedy, left padded, batched, stop strings,
``max_new_tokens=512``). Each run writes to ``--output_dir``:

- ``samples.jsonl``: one line per question: ``index``, ``question``, ``prompt``, ``completion``,
  ``finish_reason`` (``stop``/``eos``/``length``), ``num_new_tokens``, ``reference`` (the normalised number),
  ``strict_mode`` and the scoring fields filled by :func:`score_samples`: ``extracted_strict``,
  ``extracted_flexible``, ``extracted_metamath``, ``correct`` (= ``correct_strict``), ``correct_strict``,
  ``correct_flexible`` (lm-eval exact match), ``correct_strict_numeric``, ``correct_flexible_numeric``,
  ``correct_metamath`` (numeric equality);
- ``results.json``: ``metrics`` (below), the model, adapter, prompt, decoding settings, data source, and the
  versions of python, torch, transformers, accelerate, peft, datasets, tokenizers, matrix_llm (and lm_eval,
  vllm, deepspeed when installed). ``lm_eval`` is the same numbers as an lm-evaluation-harness results block, and
  ``lm_eval_command`` the ``lm_eval`` line that scores the saved model with lm-eval's task of the same prompt
  (:mod:`matrix_llm.modes.lm.handoff`);
- ``samples_gsm8k.jsonl`` (``samples_gsm8k_cot.jsonl`` for ``cot8``): the samples in lm-eval's per-sample shape
  (one line per question and filter).

Metrics (:func:`score_samples`, the one scoring function used by the eval run, ``rescore`` and the in-training
callback):

- ``strict_accuracy`` / ``flexible_accuracy``: lm-eval's ``exact_match`` after its ``strict-match`` (first
  ``#### N``; for ``cot8``: ``The answer is N.``) and ``flexible-extract`` (last number) filters, i.e. the numbers
  ``lm_eval --tasks gsm8k`` reports. ``*_numeric`` variants also accept the same number spelt differently
  (``18.00`` vs ``18``; :func:`matrix_llm.data.gsm8k.answers_match`), never fewer items.
- ``metamath_accuracy``: MetaMath's extraction (the number after the last ``The answer is: ``), the metric of the
  MetaMath / Matrix-LLM papers with ``--prompt zero_shot_cot``; reported only when some completion uses that
  format (a 0.0 for a format nobody writes would read like a failure).
- ``no_answer_rate``: fraction of completions where the strict filter finds nothing (instruct models that never
  write ``#### N`` score near 0 strict: this says why); ``flexible_no_answer_rate`` likewise;
  ``truncated_rate``: fraction that hit ``max_new_tokens``.
- ``*_stderr``: bootstrap standard error of the accuracy, ``n_boot=10000`` resamples of the ``n`` items with a
  fixed seed (0). For a mean of 0/1 scores the resampled mean is exactly ``Binomial(n, p) / n``, which is what is
  drawn (numpy ``default_rng(seed).binomial``), so it is cheap and reproducible bit for bit.
  ``*_stderr_clt`` is lm-eval's formula ``sqrt(p (1 - p) / (n - 1))``. Both are ``null`` when ``n < 2``.

``rescore`` recomputes every scoring field and metric from the completions in ``samples.jsonl`` with the same
function, so it reproduces ``results.json``'s metrics exactly (tested), and picks up any change to the
extraction code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from matrix_llm.hub import RunFolder
from matrix_llm.modes.lm.evaluate import (
    EvalResult,
    build_prompts,
    evaluate_gsm8k,
    read_jsonl,
    score_samples,
    write_jsonl,
)
from matrix_llm.modes.lm.handoff import LM_EVAL_TASKS, lm_eval_command, lm_eval_results, lm_eval_samples
from matrix_llm.parsing.usage import ToolParser, model_source
from matrix_llm.plotting import read_run_info

logger = logging.getLogger(__name__)

__all__ = ["load_model_and_tokenizer", "package_versions", "rescore", "rescore_cli", "run_gsm8k_cli"]

_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "lm_eval",
    "vllm",
    "deepspeed",
)


def package_versions() -> dict[str, str]:
    """Versions of python, matrix_llm and the installed ML packages (absent packages are left out)."""
    import matrix_llm

    versions = {"python": platform.python_version(), "matrix_llm": matrix_llm.__version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_model_and_tokenizer(
    model_name_or_path: str,
    *,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM (and a PEFT adapter on top) for evaluation; returns ``(model, tokenizer, dtype)``.

    The tokenizer is the adapter's when the adapter directory holds one (fine-tunes may add tokens), else the
    model's. ``dtype="auto"``: :func:`matrix_llm.modes.lm.generation.resolve_dtype` (bf16 on a bf16 GPU, else float32).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from matrix_llm.modes.lm.generation import load_adapter, resolve_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    tok_source = model_name_or_path
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file():
        tok_source = adapter
    tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        model_name_or_path, dtype=torch_dtype, trust_remote_code=trust_remote_code
    )
    if adapter is not None:
        model = load_adapter(model, adapter, tokenizer)
    model.to(device).eval()
    return model, tokenizer, torch_dtype


def _load_items(args) -> tuple[list[dict[str, str]], str]:
    from matrix_llm.data.gsm8k import load_gsm8k

    source = args.data or "openai/gsm8k"
    ds = load_gsm8k(source, split=args.split, config=args.config)
    if args.limit is not None:
        ds = ds.select(range(min(args.limit, len(ds))))
    return [{"question": r["question"], "answer": r["answer"]} for r in ds], source


def _fewshot(
    args, num_items: int
) -> tuple[list[list[dict[str, str]]] | None, dict[str, Any], list[dict[str, str]] | None]:
    """Per-item few-shot examples for ``fewshot5`` (lm-eval's per-document draw, or the first 5), the record of
    where they came from, and the train rows they were drawn from."""
    if args.prompt != "fewshot5":
        return None, {}, None
    from matrix_llm.data.gsm8k import LM_EVAL_FEWSHOT_SEED, lm_eval_fewshot_indices, load_gsm8k

    source = args.fewshot_data
    if source is None:
        source = args.data if args.data and Path(args.data).is_dir() else "openai/gsm8k"
    train = load_gsm8k(source, split="train", config=args.config)
    rows = [{"question": r["question"], "answer": r["answer"]} for r in train]
    if args.fewshot_sampler == "first_n":
        shots = [rows[:5]] * num_items
    else:
        shots = [[rows[j] for j in draw] for draw in lm_eval_fewshot_indices(len(rows), num_items, k=5)]
    info = {"fewshot_source": str(source), "fewshot_sampler": args.fewshot_sampler, "num_fewshot": 5}
    if args.fewshot_sampler == "lm_eval":
        info["fewshot_seed"] = LM_EVAL_FEWSHOT_SEED
    return shots, info, rows


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _gsm8k_parser() -> argparse.ArgumentParser:
    from matrix_llm.data.gsm8k import EVAL_PROMPTS

    p = ToolParser(
        prog="matrix-llm eval gsm8k",
        description="GSM8K accuracy by greedy generation, scored like lm-evaluation-harness.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, type=model_source, help="local model directory or Hub id")
    p.add_argument(
        "--adapter", default=None, type=model_source, help="PEFT adapter directory (loaded on top of --model)"
    )
    p.add_argument(
        "--prompt",
        default=None,
        choices=list(EVAL_PROMPTS),
        help="evaluation prompt (default: the template the model was trained with when its folder records it "
        "in matrix_llm_run.json, else zero_shot_cot)",
    )
    p.add_argument("--max_new_tokens", type=int, default=512, help="generation budget per question")
    p.add_argument("--batch_size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument(
        "--data", default=None, help="local .jsonl/.json/.parquet file or directory (default: Hub)"
    )
    p.add_argument("--config", default="main", help="Hub dataset config (GSM8K: main)")
    p.add_argument("--fewshot_data", default=None, help="fewshot5: train rows (default: --data dir or Hub)")
    p.add_argument(
        "--fewshot_sampler",
        default="lm_eval",
        choices=["lm_eval", "first_n"],
        help="fewshot5: lm-eval's seeded per-question draw (default) or the first 5 train rows",
    )
    p.add_argument(
        "--output_dir",
        default=None,
        help="where samples.jsonl and results.json go (default: MODEL/eval/gsm8k-PROMPT for a local model, else "
        "outputs/eval/gsm8k-PROMPT-TIMESTAMP); a folder holding results.json is refused without --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the results in an existing --output_dir")
    p.add_argument(
        "--backend",
        default="hf",
        choices=["hf", "vllm", "lm_eval"],
        help="hf; vllm (GPU only); or lm_eval: lm-evaluation-harness itself (its HFLM) on a local copy of its task "
        "of the prompt, offline (--prompt qa, fewshot5: gsm8k; cot8: gsm8k_cot)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="auto: bfloat16 on a bf16 GPU, else float32",
    )
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument(
        "--trust_remote_code", action="store_true", help="allow custom modelling code from the Hub"
    )
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def run_gsm8k_cli(argv: Sequence[str]) -> dict[str, Any]:
    """``matrix-llm eval gsm8k``; returns the results dict it wrote."""
    args = _gsm8k_parser().parse_args(list(argv))
    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1; got {args.limit}")
    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise SystemExit(
            "--backend vllm needs vLLM, which is not installed: `pip install vllm` (GPU only), "
            "or use --backend hf (the default)"
        )
    if args.backend == "lm_eval" and importlib.util.find_spec("lm_eval") is None:
        raise SystemExit("--backend lm_eval needs lm-evaluation-harness: `pip install lm-eval`")
    if args.prompt is None:
        args.prompt, origin = _default_prompt(args.model, args.adapter)
        sys.stderr.write(f"matrix-llm eval gsm8k: prompt {args.prompt!r} ({origin}; --prompt to choose)\n")
    if args.backend == "lm_eval" and args.prompt not in LM_EVAL_TASKS:
        raise SystemExit(
            f"--backend lm_eval runs lm-eval's own tasks, which exist for --prompt {', '.join(LM_EVAL_TASKS)}; "
            f"got {args.prompt!r} (use --backend hf)"
        )
    out_dir = _output_dir(args)
    items, source = _load_items(args)
    shots, fewshot_info, train_rows = _fewshot(args, len(items))

    if args.backend == "vllm":
        from matrix_llm.data.gsm8k import get_eval_prompt
        from matrix_llm.modes.lm.generation import generate_vllm, resolve_dtype

        spec = get_eval_prompt(args.prompt)
        tokenizer = None
        if args.prompt == "chat":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.adapter or args.model)
        prompts = build_prompts(
            [it["question"] for it in items], prompt=args.prompt, tokenizer=tokenizer, fewshot_examples=shots
        )
        gen = generate_vllm(
            args.model,
            prompts,
            adapter=args.adapter,
            max_new_tokens=args.max_new_tokens,
            stop_strings=spec.stop,
            dtype=args.dtype,
        )
        samples = _samples(
            items,
            prompts,
            gen.completions,
            spec.strict_mode,
            finish_reason=gen.finish_reasons,
            num_new_tokens=gen.num_new_tokens,
        )
        result = EvalResult(samples, score_samples(samples), gen.seconds, sum(gen.num_new_tokens))
        dtype_name = str(resolve_dtype(args.dtype)).removeprefix("torch.")
    elif args.backend == "lm_eval":
        import tempfile

        from matrix_llm.data.gsm8k import get_eval_prompt
        from matrix_llm.modes.lm.handoff import run_lm_eval

        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            prompts, completions, lm_results = run_lm_eval(
                args.model,
                items,
                prompt=args.prompt,
                folder=folder,
                adapter=args.adapter,
                fewshot_rows=train_rows,
                fewshot_sampler=args.fewshot_sampler,
                dtype=args.dtype,
                device=args.device,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
            )
        spec = get_eval_prompt(args.prompt)
        samples = _samples(items, prompts, completions, spec.strict_mode)  # prompts: lm-eval's own
        result = EvalResult(samples, score_samples(samples), time.perf_counter() - start)
        dtype_name = args.dtype
    else:
        model, tokenizer, torch_dtype = load_model_and_tokenizer(
            args.model,
            adapter=args.adapter,
            dtype=args.dtype,
            device=args.device,
            trust_remote_code=args.trust_remote_code,
        )
        result = evaluate_gsm8k(
            model,
            tokenizer,
            items,
            prompt=args.prompt,
            fewshot_examples=shots,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        dtype_name = str(torch_dtype).removeprefix("torch.")

    results = {
        "task": "gsm8k",
        "metrics": result.metrics,
        "model": args.model,
        "adapter": args.adapter,
        "prompt": args.prompt,
        "data": source,
        "split": args.split,
        "limit": args.limit,
        **fewshot_info,
        "decoding": {
            "backend": args.backend,
            "strategy": "greedy",
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "dtype": dtype_name,
            "stop_strings": list(_stop_strings(args.prompt)),
            "padding_side": "left",
            "bos": (
                "prepended when the tokenizer defines one (matrix_llm.data.gsm8k.encode_prompt)"
                if args.backend == "hf"
                else f"as {args.backend} tokenises the prompt text (the tokenizer's default special tokens)"
            ),
        },
        "prompts_over_context": result.over_context,
        "generation_seconds": result.seconds,
        "questions_per_second": len(items) / result.seconds if result.seconds > 0 else None,
        "versions": package_versions(),
        "command": shlex.join(["matrix-llm", "eval", "gsm8k", *argv]),
    }
    # the same numbers in lm-evaluation-harness's shapes, and the lm_eval line that reproduces them
    results["lm_eval_command"] = lm_eval_command(
        args.model,
        prompt=args.prompt,
        adapter=args.adapter,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    results["lm_eval"] = lm_eval_results(
        result.metrics, prompt=args.prompt, command=results["lm_eval_command"]
    )
    # lm-eval names its results block and its per-sample file after the task it ran
    lm_eval_task = LM_EVAL_TASKS.get(args.prompt, ("gsm8k",))[0]
    if args.backend == "lm_eval":  # lm-eval's own numbers, beside the rescoring of its responses
        results["lm_eval"]["results"][lm_eval_task] = {"alias": lm_eval_task, **lm_results}
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folder behind
    write_jsonl(out_dir / "samples.jsonl", result.samples)
    lm_eval_rows = lm_eval_samples(
        result.samples, items, stop=_stop_strings(args.prompt), max_new_tokens=args.max_new_tokens
    )
    write_jsonl(out_dir / f"samples_{lm_eval_task}.jsonl", lm_eval_rows)
    RunFolder(out_dir).write_results(results)
    m = result.metrics
    sys.stdout.write(
        f"gsm8k {args.prompt} n={m['n']}: strict {m['strict_accuracy']:.4f} ± {_fmt(m['strict_accuracy_stderr'])}, "
        f"flexible {m['flexible_accuracy']:.4f} ± {_fmt(m['flexible_accuracy_stderr'])}, "
        f"no answer {m['no_answer_rate']:.4f}  -> {out_dir}/results.json\n"
        + (f"the same with lm-eval: {results['lm_eval_command']}\n" if results["lm_eval_command"] else "")
    )
    return results


def _samples(items, prompts, completions, strict_mode: str, **columns: Sequence[Any]) -> list[dict[str, Any]]:
    """One unscored sample per question of a backend that returns completions only (vllm, lm_eval): its index,
    question, prompt, completion, the per-question ``columns`` (e.g. ``finish_reason``), reference and strict mode."""
    from matrix_llm.data.gsm8k import reference_answer

    return [
        {
            "index": i,
            "question": it["question"],
            "prompt": p,
            "completion": c,
            **{name: values[i] for name, values in columns.items()},
            "reference": reference_answer(it["answer"]),
            "strict_mode": strict_mode,
        }
        for i, (it, p, c) in enumerate(zip(items, prompts, completions, strict=True))
    ]


def _default_prompt(model: str, adapter: str | None) -> tuple[str, str]:
    """The training template recorded by ``matrix-llm sft`` in the model's (or adapter's) folder, else
    ``zero_shot_cot``; with where it came from."""
    for folder in (adapter, model):
        found = read_run_info(folder)
        if found and found[0].get("template"):
            return found[0]["template"], f"the template {found[1]} records"
    return "zero_shot_cot", "no training template recorded by the model"


def _output_dir(args) -> Path:
    if args.output_dir is not None:
        out = Path(args.output_dir)
    elif Path(args.model).expanduser().is_dir():
        out = RunFolder(Path(args.model).expanduser()).eval(f"gsm8k-{args.prompt}")
    else:
        out = Path("outputs/eval") / f"gsm8k-{args.prompt}-{time.strftime('%Y%m%d-%H%M%S')}"
    if RunFolder(out).results.is_file() and not args.overwrite:
        raise SystemExit(
            f"--output_dir {out} already holds results.json; pass --overwrite or another --output_dir"
        )
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _stop_strings(prompt: str) -> tuple[str, ...]:
    from matrix_llm.data.gsm8k import get_eval_prompt

    return get_eval_prompt(prompt).stop


def rescore(samples_path: str | Path, *, output: str | Path | None = None) -> dict[str, Any]:
    """Recompute the metrics from ``samples.jsonl`` with :func:`score_samples` and write ``output``.

    The run's metadata is copied from the ``results.json`` next to ``samples_path`` when there is one;
    ``metrics`` are recomputed, and ``rescored_from`` plus the current package versions are added.
    """
    samples_path = Path(samples_path)
    samples = read_jsonl(samples_path)
    metrics = score_samples(samples)
    results: dict[str, Any] = {}
    original = RunFolder(samples_path.parent).results
    if original.is_file():
        results = json.loads(original.read_text(encoding="utf-8"))
    results.update(metrics=metrics, rescored_from=str(samples_path), rescore_versions=package_versions())
    if output is not None:
        Path(output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def rescore_cli(argv: Sequence[str]) -> dict[str, Any]:
    p = ToolParser(
        prog="matrix-llm eval rescore", description="Recompute results.json metrics from samples.jsonl."
    )
    p.add_argument("samples", help="samples.jsonl of a `matrix-llm eval gsm8k` run")
    p.add_argument("--output", default=None, help="where to write (default: rescored.json next to samples)")
    args = p.parse_args(list(argv))
    output = args.output or str(Path(args.samples).parent / "rescored.json")
    results = rescore(args.samples, output=output)
    m = results["metrics"]
    sys.stdout.write(
        f"rescored n={m['n']}: strict {m['strict_accuracy']:.4f}, flexible {m['flexible_accuracy']:.4f}, "
        f"no answer {m['no_answer_rate']:.4f} -> {output}\n"
    )
    return results
