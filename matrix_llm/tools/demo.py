"""``matrix-llm demo``: the embedded default, end to end, offline, on a CPU in a few minutes.

    matrix-llm demo [--output_dir outputs/demo] [--config demo/mce.yaml] [--eval_size 200] [--field value ...]

1. ``matrix-llm sft --config demo/mce.yaml``: a tiny Llama and a byte-level BPE tokenizer built locally,
   trained on synthetic GSM8K-format word problems with ``loss = CE + w * MCE`` (formulation ``head``).
2. ``matrix-llm eval gsm8k`` on held-out synthetic problems (disjoint from training by construction): greedy
   decoding, the training prompt, lm-eval strict-match / flexible-extract scoring.
3. ``metrics.png`` (``lm_loss``, ``matrix_loss``, matrix entropy, effective rank over steps), ``metrics.json`` and
   ``report.md`` in ``--output_dir``.

Unknown options are passed to ``sft`` as field overrides (e.g. ``--max_steps 20`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from matrix_llm.hub import RunFolder
from matrix_llm.parsing import PACKAGED_RECIPES

DEFAULT_CONFIG = PACKAGED_RECIPES / "demo" / "mce.yaml"  # package data
# the last values logged for these keys go into the report
TRAIN_KEYS = ("lm_loss", "matrix_loss", "matrix_entropy", "effective_rank")


def _last(history: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


def _first(history: list[dict], key: str) -> float | None:
    return next((entry[key] for entry in history if key in entry), None)


def heldout_problems(data_args, n: int) -> list[dict[str, str]]:
    """Test-split synthetic problems drawn like the training set but from another seed and split."""
    from matrix_llm.data.synthetic import generate_problems

    return generate_problems(
        n,
        seed=data_args.synthetic_seed + 1000,
        split="test",
        steps=tuple(range(1, data_args.synthetic_steps + 1)),
        max_value=data_args.synthetic_max_value,
    )


def _resumed(train: dict) -> str:
    start = train["start_step"]
    return f" ({train['global_step'] - start} of them in this run, resumed at step {start})" if start else ""


def write_report(out: Path, summary: dict, samples: list[dict]) -> Path:
    m = summary["eval"]
    t = summary["train"]
    objective = (
        "plain CE (`matrix_loss_type: none`; matrix entropy and effective rank logged as diagnostics)"
        if summary["matrix_loss_type"] == "none"
        else f"`loss = lm_loss + {summary['matrix_loss_weight']} * MCE` (formulation `{summary['matrix_loss_type']}`)"
    )
    lines = [
        "# matrix_llm demo",
        "",
        (
            f"Tiny Llama ({summary['num_parameters'] / 1e6:.2f}M parameters, built offline) fine-tuned on "
            f"{summary['train_problems']} synthetic GSM8K-format problems (1-{summary['steps']} steps) with "
            f"{objective}, {t['global_step']} optimizer steps{_resumed(t)} in {summary['train_seconds']:.0f} s "
            "on CPU."
        ),
        "",
        "## Held-out accuracy (greedy, lm-eval scoring)",
        "",
        (
            f"- strict-match (`#### N`): **{m['strict_accuracy']:.3f}** ± {m['strict_accuracy_stderr'] or 0:.3f} "
            f"(bootstrap stderr, n = {m['n']})"
        ),
        f"- flexible-extract (last number): {m['flexible_accuracy']:.3f}",
        f"- no answer: {m['no_answer_rate']:.3f}",
        "",
        "## Training curves",
        "",
        "| metric | first logged | last logged |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {t['first'][k]:.4f} | {t['last'][k]:.4f} |"
        for k in TRAIN_KEYS
        if t["last"].get(k) is not None
    ]
    lines += ["", "![metrics](metrics.png)", "", "## Samples", ""]
    for s in samples[:3]:
        mark = "correct" if s["correct"] else "wrong"
        lines += [
            f"**Q:** {s['question']}",
            "",
            "```",
            s["completion"].strip(),
            "```",
            f"reference {s['reference']}, {mark}",
            "",
        ]
    lines += [
        (
            "Files: `model/` (weights, tokenizer, model card), `eval/samples.jsonl`, `eval/results.json`, "
            "`metrics.json`, `metrics.png`."
        )
    ]
    path = RunFolder(out).report
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# measured on this project's 2-core CPU at 2 threads (`make demo`: 2000 steps in 129 s, 200 held-out problems in
# 6 s): for the estimate the demo prints at its start
SECONDS_PER_STEP = 0.06
SECONDS_PER_PROBLEM = 0.03


def _objective(training_args: Any) -> str:
    """``CE`` or ``CE + w x MCE (formulation)``: the plan's and the figure title's name of the loss."""
    if training_args.matrix_loss_type == "none":
        return "CE"
    return f"CE + {training_args.matrix_loss_weight} x MCE ({training_args.matrix_loss_type})"


def _plan(data_args: Any, training_args: Any, eval_size: int) -> str:
    """What the demo will do and about how long it takes (printed once the model is built)."""
    steps = training_args.max_steps
    seconds = steps * SECONDS_PER_STEP + eval_size * SECONDS_PER_PROBLEM
    return (
        f"\nmatrix-llm demo: {steps} optimizer steps of {_objective(training_args)} on {data_args.synthetic_train_size} synthetic "
        f"problems, then greedy answers to {eval_size} held-out ones; about {seconds / 60:.0f} min on a 2-core CPU "
        f"(the progress bar shows the rate here). Output: {Path(training_args.output_dir).parent}\n\n"
    )


def _start_step(into: dict[str, int]) -> Any:
    """A ``TrainerCallback`` that records the step training starts at (after a resume, the checkpoint's)."""
    from transformers import TrainerCallback

    class StartStep(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            into["step"] = state.global_step

    return StartStep()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="matrix-llm demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the sft recipe to run")
    parser.add_argument("--eval_size", type=int, default=200, help="held-out problems to evaluate")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args, overrides = parser.parse_known_args(argv)
    from matrix_llm.parsing import resolve_config

    config = resolve_config(args.config)
    if config is None:
        parser.error(
            f"--config {args.config}: no such file, nor a recipe shipped with matrix_llm (e.g. demo/ce.yaml)"
        )
    args.config = str(config)

    from matrix_llm.modes.lm import eval_gsm8k
    from matrix_llm.modes.lm import evaluate as evaluation
    from matrix_llm.modes.lm.command import LMMode
    from matrix_llm.plotting import plot_run
    from matrix_llm.runner import run_mode

    started: dict[str, int] = {}  # the step training starts at (> 0 when resumed)

    class DemoMode(LMMode):
        prog = "matrix-llm demo"

        def check(self) -> list[str]:
            if self.data_args.is_synthetic:
                return super().check()
            name = self.data_args.dataset_name
            return [f"`dataset_name`: the demo evaluates on synthetic problems; {args.config} uses {name!r}"]

        def build(self, objective: Any) -> Any:
            trainer = super().build(objective)
            trainer.add_callback(_start_step(started))
            sys.stdout.write(_plan(self.data_args, self.training_args, args.eval_size))
            return trainer

    out = Path(args.output_dir)
    model_dir = out / "model"
    mode = DemoMode()
    start = time.perf_counter()
    status = run_mode(mode, ["--config", args.config, *overrides, "--output_dir", str(model_dir)])
    if status:
        return status
    data_args, training_args = mode.data_args, mode.training_args
    train_seconds = time.perf_counter() - start

    heldout = out / "heldout.jsonl"
    evaluation.write_jsonl(heldout, heldout_problems(data_args, args.eval_size))
    results = eval_gsm8k.run_gsm8k_cli(
        [
            "--model",
            str(model_dir),
            "--data",
            str(heldout),
            "--prompt",
            data_args.template,
            "--max_new_tokens",
            str(args.max_new_tokens),
            "--batch_size",
            "32",
            "--dtype",
            "float32",
            "--output_dir",
            str(out / "eval"),
            "--overwrite",
        ]
    )

    state = json.loads((model_dir / "trainer_state.json").read_text())
    history = state["log_history"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = model.config
    summary = {
        "config": args.config,
        "overrides": overrides,
        "model": {
            "type": config.model_type,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size,
        },
        "num_parameters": model.num_parameters(),
        "train_problems": data_args.synthetic_train_size,
        "steps": data_args.synthetic_steps,
        "matrix_loss_type": training_args.matrix_loss_type,
        "matrix_loss_weight": training_args.matrix_loss_weight,
        "train_seconds": train_seconds,
        "train": {
            "global_step": state["global_step"],
            "start_step": started.get("step", 0),
            "first": {k: _first(history, k) for k in TRAIN_KEYS},
            "last": {k: _last(history, k) for k in TRAIN_KEYS},
        },
        "eval": results["metrics"],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    objective = _objective(training_args)
    accuracy = results["metrics"]["strict_accuracy"]
    plot_run(
        model_dir,
        RunFolder(out).metrics_png,
        title=f"matrix_llm demo: {objective}, held-out strict-match {accuracy:.2f}",
    )
    report = write_report(out, summary, evaluation.read_jsonl(out / "eval" / "samples.jsonl"))
    m = results["metrics"]
    sys.stdout.write(
        f"\nmatrix-llm demo: held-out strict-match {m['strict_accuracy']:.3f} (n={m['n']}), "
        f"trained {train_seconds:.0f} s -> {report}\n"
    )
    return 0
