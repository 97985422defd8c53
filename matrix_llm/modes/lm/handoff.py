"""GSM8K results in lm-evaluation-harness's shapes, and the ``lm_eval`` command that reproduces them.

- :func:`lm_eval_command`: the ``lm_eval --model hf --model_args ...`` line that scores a saved model (a full model
  as ``pretrained=MODEL``, a LoRA adapter as ``pretrained=BASE,peft=ADAPTER,tokenizer=ADAPTER``) with the lm-eval
  task of the same prompt: ``qa`` is lm-eval's ``gsm8k`` zero-shot (``Question: ...\\nAnswer:``), ``fewshot5`` its
  ``gsm8k`` 5-shot, ``cot8`` its ``gsm8k_cot``; ``None`` for prompts lm-eval has no task for (``alpaca``, ``chat``).
- :func:`lm_eval_results`: the ``results`` / ``n-shot`` / ``n-samples`` / ``config`` block of an lm-eval results
  file (``results.gsm8k["exact_match,strict-match"]``, ``"exact_match_stderr,strict-match"``, the
  ``flexible-extract`` pair; the standard errors are lm-eval's, the sample standard deviation over sqrt(n)).
- :func:`lm_eval_samples`: the samples in lm-eval's per-sample shape (``samples_gsm8k_*.jsonl``: one line per
  document and filter, with ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``, ``exact_match`` and
  the sha256 hashes lm-eval writes).
- :func:`run_lm_eval`: ``eval gsm8k --backend lm_eval``, lm-eval itself on a local copy of its task, offline.

BOS: matrix_llm prompts start with the tokenizer's BOS when it defines one; lm-eval lets the tokenizer add its own
special tokens, which is the same for tokenizers that add their BOS themselves (Llama, Llemma, Mistral).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LM_EVAL_TASKS", "lm_eval_command", "lm_eval_results", "lm_eval_samples", "run_lm_eval"]

# matrix_llm's prompt -> (lm-eval task, its number of shots)
LM_EVAL_TASKS = {"qa": ("gsm8k", 0), "fewshot5": ("gsm8k", 5), "cot8": ("gsm8k_cot", 8)}


def lm_eval_command(
    model: str,
    *,
    prompt: str,
    adapter: str | None = None,
    base_model: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
) -> str | None:
    """The ``lm_eval`` command line scoring ``model`` (or ``adapter`` on ``base_model`` / ``model``) with the task
    of ``prompt`` (module docstring); ``None`` when lm-eval has no such task."""
    if prompt not in LM_EVAL_TASKS:
        return None
    task, shots = LM_EVAL_TASKS[prompt]
    if adapter is not None:
        model_args = f"pretrained={base_model or model},peft={adapter},tokenizer={adapter}"
    else:
        model_args = f"pretrained={model}"
    if dtype and dtype != "auto":
        model_args += f",dtype={dtype}"
    line = f"lm_eval --model hf --model_args {model_args} --tasks {task} --num_fewshot {shots} --batch_size {batch_size}"
    if max_new_tokens is not None:
        line += f" --gen_kwargs max_gen_toks={max_new_tokens}"
    return line


def lm_eval_results(metrics: Mapping[str, Any], *, prompt: str, command: str | None) -> dict[str, Any]:
    """The lm-eval results block of one ``eval gsm8k`` run (module docstring)."""
    task, shots = LM_EVAL_TASKS.get(prompt, (f"gsm8k ({prompt} prompt, no lm-eval task)", None))
    return {
        "results": {
            task: {
                "alias": task,
                "exact_match,strict-match": metrics["strict_accuracy"],
                "exact_match_stderr,strict-match": metrics["strict_accuracy_stderr_clt"],
                "exact_match,flexible-extract": metrics["flexible_accuracy"],
                "exact_match_stderr,flexible-extract": metrics["flexible_accuracy_stderr_clt"],
            }
        },
        "n-shot": {task: shots},
        "n-samples": {task: {"original": metrics["n"], "effective": metrics["n"]}},
        "higher_is_better": {task: {"exact_match": True}},
        "config": {"command": command},
    }


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lm_eval_samples(
    samples: Sequence[Mapping[str, Any]],
    docs: Sequence[Mapping[str, Any]],
    *,
    stop: Sequence[str],
    max_new_tokens: int,
) -> list[dict[str, Any]]:
    """``samples`` (scored by :func:`~matrix_llm.modes.lm.evaluate.score_samples`) and their GSM8K rows ``docs`` in
    lm-eval's per-sample shape: two lines per document, ``strict-match`` then ``flexible-extract``."""
    from matrix_llm.data.gsm8k import lm_eval_filter

    out = []
    for i, (sample, doc) in enumerate(zip(samples, docs, strict=True)):
        doc = {"question": doc["question"], "answer": doc["answer"]}
        arguments = {
            "gen_args_0": {
                "arg_0": sample["prompt"],
                "arg_1": {"until": list(stop), "do_sample": False, "max_gen_toks": max_new_tokens},
            }
        }
        for name, mode, key in (
            ("strict-match", sample["strict_mode"], "correct_strict"),
            ("flexible-extract", "flexible", "correct_flexible"),
        ):
            out.append(
                {
                    "doc_id": i,
                    "doc": doc,
                    "target": doc["answer"],
                    "arguments": arguments,
                    "resps": [[sample["completion"]]],
                    "filtered_resps": [lm_eval_filter(sample["completion"], mode=mode)],
                    "filter": name,
                    "metrics": ["exact_match"],
                    "doc_hash": _hash(json.dumps(doc, indent=2, ensure_ascii=False)),
                    "prompt_hash": _hash(sample["prompt"]),
                    "target_hash": _hash(doc["answer"]),
                    "exact_match": float(bool(sample[key])),
                }
            )
    return out


def run_lm_eval(
    model: str,
    items: Sequence[Mapping[str, Any]],
    *,
    prompt: str,
    folder: Any,
    adapter: str | None = None,
    fewshot_rows: Sequence[Mapping[str, Any]] | None = None,
    fewshot_sampler: str = "lm_eval",
    dtype: str = "auto",
    device: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 512,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """``eval gsm8k --backend lm_eval``: lm-eval's own ``simple_evaluate`` with its ``HFLM`` on a local copy of the
    task of ``prompt`` (:data:`LM_EVAL_TASKS`: its ``gsm8k`` for ``qa`` and ``fewshot5``, ``gsm8k_cot`` for ``cot8``;
    the same prompt, shots, stops and filters, ``dataset_path: json`` on ``items`` written to ``folder``), offline.
    ``fewshot5`` draws its shots from ``fewshot_rows`` (the train split) with lm-eval's seeded sampler, or takes the
    first 5 (``fewshot_sampler="first_n"``); ``cot8``'s 8 exemplars are the task's own. Returns lm-eval's prompts
    (the contexts it generated from) and its completions, both in the order of ``items``, and its results block
    for the task."""
    from pathlib import Path

    import lm_eval
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if prompt not in LM_EVAL_TASKS:
        raise ValueError(
            f"--backend lm_eval runs lm-eval's own tasks: --prompt {' or '.join(LM_EVAL_TASKS)}; got {prompt!r}"
        )
    if prompt == "fewshot5" and not fewshot_rows:
        raise ValueError(
            "--backend lm_eval with --prompt fewshot5 needs the train rows to draw the shots from"
        )
    if fewshot_sampler not in ("lm_eval", "first_n"):
        raise ValueError(f"fewshot_sampler must be 'lm_eval' or 'first_n'; got {fewshot_sampler!r}")
    name, shots = LM_EVAL_TASKS[prompt]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"test": items, "train": fewshot_rows or items[:1]}  # qa and cot8 read no train rows
    files = {split: folder / f"{split}.jsonl" for split in splits}
    for split, rows in splits.items():
        files[split].write_text(
            "".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows),
            encoding="utf-8",
        )
    from lm_eval import tasks as lm_eval_tasks

    source = {"gsm8k": "gsm8k.yaml", "gsm8k_cot": "gsm8k-cot.yaml"}[name]
    task = yaml.safe_load((Path(lm_eval_tasks.__file__).parent / "gsm8k" / source).read_text())
    task.pop("tag", None)
    task.update(
        task=f"{name}_local",
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: str(path) for split, path in files.items()}},
    )
    if prompt == "fewshot5" and fewshot_sampler == "first_n":
        task["fewshot_config"] = {"sampler": "first_n"}
    (folder / f"{name}_local.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")
    options: dict[str, Any] = {"pretrained": model, "batch_size": batch_size, "dtype": dtype}
    if adapter is not None:
        options.update(peft=adapter, tokenizer=adapter)
    import torch

    options["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = lm_eval.simple_evaluate(
        model=HFLM(**options),
        tasks=[f"{name}_local"],
        num_fewshot=shots,
        gen_kwargs=f"max_gen_toks={max_new_tokens}",
        log_samples=True,
        task_manager=TaskManager(include_path=str(folder)),
    )
    rows = sorted(
        (s for s in out["samples"][f"{name}_local"] if s["filter"] == "strict-match"),
        key=lambda s: s["doc_id"],
    )
    contexts = [s["arguments"][0][0] for s in rows]
    return contexts, [s["resps"][0][0] for s in rows], out["results"][f"{name}_local"]
