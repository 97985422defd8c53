"""A run's output folder: its layout, its model card and its Hub upload, for the runs of every command.

- :class:`RunFolder`: the one place that names what a run folder holds; every writer and reader uses it.
- :func:`model_card` / :func:`write_model_card`: ``README.md`` with YAML metadata built by ``huggingface_hub``'s
  ``ModelCardData`` (``base_model``, ``datasets``, ``tags: [matrix-llm, matrix-entropy, <the objective's tags>]``,
  ``library_name: transformers`` or ``peft``, ``pipeline_tag`` and a ``model-index`` of the run's final evaluation
  results, :class:`CardResult`, which the Hub shows as evaluation results) and a
  body with the base model, the data, what the objective says about itself
  (:class:`~matrix_llm.modes.ObjectiveCard`: the loss, its settings, a note such as "the LM formulation is
  matrix_llm's documented derivation"), the training hyper-parameters, the evaluation results and the final
  metrics (evaluation numbers and losses, not runtime counters), how to load the result and the Matrix-SSL
  citation. Nothing links to a file of this repository: a card is read on the Hub.
- :func:`push_to_hub`: upload ``output_dir`` (weights or adapter, tokenizer, card; not the ``checkpoint-*``
  folders) with ``huggingface_hub.HfApi.create_repo`` + ``upload_folder``. The Trainer's own
  ``push_to_hub`` is not used at the end because it regenerates ``README.md`` with its generic card; the
  Trainer still pushes intermediate checkpoints itself when ``push_to_hub`` and ``hub_strategy`` say so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CITATION",
    "CardResult",
    "RunFolder",
    "card_metrics",
    "final_metrics",
    "model_card",
    "push_to_hub",
    "write_model_card",
]


@dataclass(frozen=True)
class RunFolder:
    """The layout of a run's ``output_dir``::

    README.md, config.json, model.safetensors, ...  the trained model (``save_pretrained``) and its card
    backbone/              ssl: the backbone alone (``AutoModel`` + its image processor)
    text_adapter/          clip with ``use_peft``: the text tower's LoRA adapter (the model has it merged)
    results.json           ssl / clip: the end-of-run measurements and the command line
    report.md, metrics.png the run's report and its figure (``matrix-llm plot``)
    matrix_llm_run.json    the objective's name and plot panels, the command's run info
    eval/<task>/           ``matrix-llm eval ...`` on the saved model (results.json, samples)
    checkpoint-*/          the Trainer's checkpoints
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def backbone(self) -> Path:
        return self.root / "backbone"

    @property
    def text_adapter(self) -> Path:
        return self.root / "text_adapter"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def metrics_png(self) -> Path:
        return self.root / "metrics.png"

    @property
    def run_info(self) -> Path:
        return self.root / "matrix_llm_run.json"

    def eval(self, task: str) -> Path:
        """Where ``matrix-llm eval <task>`` writes for the model saved here."""
        return self.root / "eval" / task

    def write_results(self, results: Mapping[str, Any]) -> Path:
        self.results.parent.mkdir(parents=True, exist_ok=True)
        self.results.write_text(json.dumps(results, indent=2) + "\n")
        return self.results

    def read_results(self) -> dict[str, Any]:
        return json.loads(self.results.read_text())


CITATION = """\
@inproceedings{zhang2024matrix,
  title     = {Matrix Information Theory for Self-Supervised Learning},
  author    = {Zhang, Yifan and Tan, Zhiquan and Yang, Jingqin and Huang, Weiran and Yuan, Yang},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  year      = {2024},
  eprint    = {2305.17326},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/2305.17326}
}"""

TRAIN_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "bf16",
    "seed",
)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of every numeric key in a Trainer ``log_history`` (train and eval)."""
    out: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key in ("step", "epoch") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[key] = float(value)
    return out


# logged counters that say how the run went, not what the model does: left out of the card's metrics table
_COUNTERS = ("_runtime", "_per_second", "total_flos", "grad_norm", "learning_rate", "num_tokens")


def card_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The final metrics a model card lists: losses and evaluation numbers, without runtime counters."""
    return {k: v for k, v in metrics.items() if not any(part in k for part in _COUNTERS)}


@dataclass(frozen=True)
class CardResult:
    """One final evaluation number for the card's ``model-index`` (``huggingface_hub.EvalResult``).

    Attributes:
        key: its key in the run's final metrics (absent: not listed).
        task: the Hub task type (``text-generation``, ``image-classification``, ``zero-shot-image-classification``,
            ``image-feature-extraction``, ...).
        metric: the metric type (``exact_match``, ``accuracy``, ``recall``, ...).
        name: its display name (with the protocol: prompt and shots, ``k`` of a recall).
        dataset: the evaluated data (default: the run's evaluation data, else its training data).
        split: the split evaluated, when known.
    """

    key: str
    task: str
    metric: str
    name: str
    dataset: str | None = None
    split: str | None = None


def _eval_results(results: Any, metrics: Mapping[str, float], data: str) -> list[Any]:
    from huggingface_hub import EvalResult

    out = []
    for r in results:
        value = metrics.get(r.key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        name = r.dataset or data
        out.append(
            EvalResult(
                task_type=r.task,
                dataset_type=name if _looks_like_hub_id(name) else Path(name).name or name,
                dataset_name=name,
                dataset_split=r.split,
                metric_type=r.metric,
                metric_name=r.name,
                metric_value=float(value),
            )
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def model_card(
    *,
    objective_card: Any,
    base_model: str,
    dataset: str,
    training_args: Any,
    data_args: Any = None,
    metrics: Mapping[str, float] | None = None,
    peft: bool = False,
    model_id: str | None = None,
    eval_dataset: str | None = None,
    command: str = "sft",
    eval_results: Any = (),
) -> str:
    """The text of ``README.md`` (YAML front matter + markdown body).

    ``objective_card``: an :class:`~matrix_llm.modes.ObjectiveCard` (``objective.card(training_args)``);
    ``data_args``: the command's data arguments (a dataclass), each field in the card's data table;
    ``eval_results``: the :class:`CardResult` s of the mode, listed in the ``model-index`` when in ``metrics``.
    """
    from huggingface_hub import ModelCardData

    card = objective_card
    tags = ["matrix-llm", "matrix-entropy", *card.tags, "generated_from_trainer"]
    if peft:
        tags += ["lora", "peft"]
    hub_datasets = [d for d in dict.fromkeys([dataset, eval_dataset]) if d and _looks_like_hub_id(d)]
    name = model_id or "matrix-llm model"
    evaluated = _eval_results(eval_results, metrics or {}, eval_dataset or dataset)
    data = ModelCardData(
        base_model=base_model if _looks_like_hub_id(base_model) else None,
        datasets=hub_datasets or None,
        library_name="peft" if peft else "transformers",
        pipeline_tag=card.pipeline_tag,
        tags=list(dict.fromkeys(tags)),
        model_name=name if evaluated else None,
        eval_results=evaluated or None,
    )
    front = ["---", data.to_yaml(), "---"]

    body = [
        f"# {name}",
        "",
        f"This model is a fine-tuned version of `{base_model}` on `{dataset}`"
        + (f" (evaluated on `{eval_dataset}`)" if eval_dataset and eval_dataset != dataset else "")
        + f", trained with matrix_llm (`matrix-llm {command}`): {card.summary}.",
        "",
    ]
    body += [f"- {line}" for line in card.details]
    if peft:
        body.append("- Weights: a LoRA adapter (PEFT); load it on top of the base model.")
    if card.note:
        body += ["", card.note]
    if card.settings:
        body += ["", "## Objective settings", "", "| field | value |", "|---|---|"]
        body += [f"| `{f}` | {_fmt(v)} |" for f, v in card.settings.items()]
    if data_args is not None:
        body += ["", "## Data settings", "", "| field | value |", "|---|---|"]
        body += [
            f"| `{f.name}` | {_fmt(getattr(data_args, f.name))} |" for f in dataclasses.fields(data_args)
        ]
    body += ["", "## Training hyper-parameters", "", "| field | value |", "|---|---|"]
    body += [f"| `{f}` | {_fmt(_get(training_args, f))} |" for f in TRAIN_FIELDS]
    scaled = _get(training_args, "learning_rate_record")
    if scaled:
        rule, total, base = scaled["rule"], scaled["total_batch"], scaled["base_batch"]
        how = f"scaled ({rule}, `learning_rate_scaling`) by the total batch {total} over {base}"
        body += ["", f"`learning_rate` is {_fmt(scaled['learning_rate_as_set'])} as set, {how}."]
    if evaluated:
        body += ["", "## Evaluation results", "", "| metric | data | value |", "|---|---|---|"]
        body += [f"| {r.metric_name} | `{r.dataset_name}` | {_fmt(r.metric_value)} |" for r in evaluated]
    body += ["", "## Final metrics", ""]
    listed = card_metrics(metrics or {})
    if listed:
        body += ["| metric | value |", "|---|---|"]
        body += [f"| `{k}` | {_fmt(v)} |" for k, v in sorted(listed.items())]
    else:
        body.append("No metrics were recorded.")
    repo = model_id or "path/to/output_dir"
    auto_class = "AutoPeft" + card.auto_class[len("Auto") :] if peft else card.auto_class
    body += ["", "## Usage", "", "```python"]
    if peft:
        body += [f"from peft import {auto_class}", f"from transformers import {card.processor_class}"]
    else:
        body += [f"from transformers import {auto_class}, {card.processor_class}"]
    body += [
        "",
        f'model = {auto_class}.from_pretrained("{repo}")',
        (
            f"{'tokenizer' if card.processor_class == 'AutoTokenizer' else 'processor'} = "
            f'{card.processor_class}.from_pretrained("{repo}")'
        ),
    ]
    body += ["```", "", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(front + [""] + body)


def _looks_like_hub_id(name: str) -> bool:
    return (
        bool(name)
        and name.count("/") == 1
        and not Path(name).expanduser().exists()
        and not name.startswith((".", "/", "~"))
    )


def write_model_card(output_dir: str | Path, **kwargs: Any) -> Path:
    """Write :func:`model_card` to ``output_dir/README.md`` and return its path."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(**kwargs), encoding="utf-8")
    return path


def push_to_hub(
    output_dir: str | Path,
    *,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "End of training",
) -> Any:
    """Create ``repo_id`` (if needed) and upload ``output_dir`` to it: weights or adapter, tokenizer, README.md.

    Checkpoint folders (``checkpoint-*``) and private files (``_*``) are left out, as in
    ``Trainer.push_to_hub``. ``token``: ``None`` uses the login token / ``HF_TOKEN`` (preferred to a flag).
    Returns the ``CommitInfo`` of ``upload_folder``.
    """
    from huggingface_hub import HfApi

    api = HfApi(library_name="matrix_llm")
    url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    repo_id = getattr(url, "repo_id", None) or repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message=commit_message,
        token=token,
        revision=revision,
        ignore_patterns=["_*", "checkpoint-*", "checkpoint-*/**"],
    )
