"""``matrix-llm analyze``: per-layer matrix metrics of any Hub / local model on data, and the
linear-mode-connectivity probe between two checkpoints.

    matrix-llm analyze --model outputs/sft-ce --data synthetic [--compare outputs/sft-mce]
    matrix-llm analyze --model outputs/classify-digits --data digits --split test
    matrix-llm analyze lmc outputs/run-a outputs/run-b --data digits --split test [--grid 11]

Per layer (definitions in :mod:`matrix_llm.tools.analysis`): Diff-eRank's matrix entropy and effective rank of the
per-example token matrices, ``diff_erank`` against the same architecture at random initialisation (seeded;
``--no_random_init`` skips it), the Matrix Nuclear-Norm, and the effective rank of the mean-pooled examples.
Rows ``0 .. n-1`` (``output: block``) are the blocks' outputs, the last one before the model's final norm; row
``n`` (``output: final norm``, without ``--layers``) is the model's last hidden state after it, the
representation Diff-eRank's paper reports for an LLM, where the model has such a norm (Llama, GPT-2, ViT; BERT
has none).
Writes ``layers.json``, ``layers.csv`` and ``layers.png`` (``lmc.json`` / ``lmc.csv`` / ``lmc.png`` for ``lmc``)
to ``--output_dir`` and prints the table.

The model class is the one its config names (``architectures``: a causal LM, an image or sequence classifier,
an encoder), else ``AutoModel``. A PEFT adapter directory (``matrix-llm sft --use_peft`` saves one) is analysed as
its base model (``base_model_name_or_path`` of ``adapter_config.json``) with the adapter merged in. Images
(``digits``, an IDX folder such as ``../shared/data/fashion-mnist``, a Hub / local image dataset) go through the model's image processor, or, for a model saved without one (``matrix-llm
classify``'s tiny models), are resized to ``config.image_size`` and scaled to ``[-1, 1]`` as in training; texts
(``synthetic``, a local file, a Hub dataset; ``--text_column``) through its tokenizer.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
from pathlib import Path
from typing import Any

from matrix_llm.parsing.usage import ToolParser, model_source

__all__ = ["Batches", "adapter_base", "load_any_model", "main", "model_batches", "output_name"]

PROG = "matrix-llm analyze"
logger = logging.getLogger("matrix_llm.tools.analyze")


def adapter_base(name: str) -> str | None:
    """The base model of a local PEFT adapter directory (``adapter_config.json`` and no ``config.json``), else
    ``None``.

    Raises:
        ValueError: the adapter's config names no base model.
    """
    path = Path(name)
    if not (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return None
    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{name}: adapter_config.json names no `base_model_name_or_path`; pass the merged model"
        )
    return base


def load_any_model(
    name: str,
    *,
    dtype: str = "float32",
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """The model class named by the config's ``architectures`` (else ``AutoModel``), loaded in eval mode; a PEFT
    adapter directory is loaded on its base model and merged in (:func:`adapter_base`)."""
    import torch
    import transformers

    from matrix_llm.modes.lm.generation import resolve_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    common = dict(revision=revision, trust_remote_code=trust_remote_code)
    base = adapter_base(name)
    config = transformers.AutoConfig.from_pretrained(base or name, **common)
    architecture = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        model_class = transformers.AutoModel
    model = model_class.from_pretrained(base or name, dtype=resolve_dtype(dtype, device), **common)
    if base is not None:
        from matrix_llm.modes.lm.generation import load_adapter

        model = load_adapter(model, name).merge_and_unload()
    return model.to(device).eval()


def _is_vision(model: Any) -> bool:
    return getattr(model, "main_input_name", "input_ids") == "pixel_values"


def model_batches(name: str, model: Any, args: argparse.Namespace) -> Batches:
    """The first ``--num_samples`` rows of ``--data`` as batches of ``--batch_size`` in ``model``'s input format,
    collated as they are used (:class:`Batches`)."""
    if _is_vision(model):
        from matrix_llm.data.images import load_image_dataset, saved_image_collator

        rows = load_image_dataset(args.data, args.split, config=args.data_config)
        collator = saved_image_collator(name, model.config, revision=args.revision)
    else:
        from transformers import AutoTokenizer

        from matrix_llm.data.text import TextCollator, count_truncated, load_text_dataset

        rows = load_text_dataset(
            args.data,
            args.split,
            config=args.data_config,
            text_column=args.text_column,
            label_column=args.label_column,
        )
        saved_with_one = (
            Path(name) / "tokenizer_config.json"
        ).is_file()  # else an adapter's base model has it
        tokenizer = AutoTokenizer.from_pretrained(
            name if saved_with_one else adapter_base(name) or name, revision=args.revision
        )
        causal = callable(getattr(model, "can_generate", None)) and model.can_generate()
        collator = TextCollator(tokenizer, max_length=args.max_length, causal=causal)
        cut = count_truncated(tokenizer, rows["text"][: args.num_samples], args.max_length)
        if cut:
            logger.warning(
                "%d of the texts are longer than --max_length %d tokens and are cut", cut, args.max_length
            )
    rows = rows.select(range(min(len(rows), args.num_samples)))
    if len(rows) == 0:
        raise ValueError(f"{args.data} ({args.split}): no rows")
    return Batches(rows, collator, args.batch_size)


class Batches:
    """The rows as collated batches of ``batch_size``, collated on the fly at each pass (one batch in memory, not
    ``--num_samples`` rows of tensors); iterable any number of times, with a length."""

    def __init__(self, rows: Any, collator: Any, batch_size: int) -> None:
        self.rows, self.collator, self.batch_size = rows, collator, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Any:
        for i in range(0, len(self.rows), self.batch_size):
            yield self.collator([self.rows[j] for j in range(i, min(i + self.batch_size, len(self.rows)))])


def _layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(
            f"{PROG}: --layers must be comma-separated integers (e.g. 0,5,-1); got {text!r}"
        ) from None


def _table(
    name: str, args: argparse.Namespace, references: dict[str, tuple[str, list]]
) -> dict[str, list[dict]]:
    """``{name: rows}``, with ``diff_erank`` and the random-init rows (``{name (random init): rows}``) unless
    ``--no_random_init``. ``references`` caches the random-init table per architecture (config), so a second
    model of the same architecture reuses it. One model in memory at a time."""
    from matrix_llm.models.tiny import random_init
    from matrix_llm.tools import analysis

    model = load_any_model(
        name, dtype=args.dtype, revision=args.revision, trust_remote_code=args.trust_remote_code
    )
    batches = model_batches(name, model, args)
    layers = _layers(args.layers)
    table = analysis.layer_table(model, batches, layers=layers, desc=name)
    if args.no_random_init:
        return {name: table}
    config_dict = {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    architecture = f"{type(model).__name__} {json.dumps(config_dict, sort_keys=True, default=str)}"
    if architecture in references:
        return {name: analysis.with_diff_erank(table, references[architecture][1])}
    model_class, config, parameter = type(model), model.config, next(model.parameters())
    dtype, device = parameter.dtype, parameter.device
    del model
    gc.collect()
    fresh = random_init(model_class, config, seed=args.seed, dtype=dtype, device=device)
    label = f"{name} (random init)"
    references[architecture] = (label, analysis.layer_table(fresh, batches, layers=layers, desc=label))
    del fresh
    gc.collect()
    return {
        name: analysis.with_diff_erank(table, references[architecture][1]),
        label: references[architecture][1],
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("  ".join(f"{c:>22}" if i else f"{c:<40}" for i, c in enumerate(columns)))  # noqa: T201 - CLI output
    for row in rows:
        cells = [
            f"{row.get(c, ''):>22.4f}" if isinstance(row.get(c), float) else f"{row.get(c, '')!s:>22}"
            for c in columns[1:]
        ]
        print(f"{str(row[columns[0]])[-40:]:<40}  " + "  ".join(cells))  # noqa: T201 - CLI output


def output_name(model: str, compare: str | None = None) -> str:
    """The default output folder's name: the model's folder name, ``A_vs_B`` with ``--compare``; a name two models
    share (``demo/model`` and ``demo-ce/model``) takes its parent's too (``demo-model_vs_demo-ce-model``)."""
    if compare is None:
        return Path(model).name
    a, b = Path(model), Path(compare)
    if a.name == b.name:
        return f"{a.parent.name}-{a.name}_vs_{b.parent.name}-{b.name}".lstrip("-").replace("_vs_-", "_vs_")
    return f"{a.name}_vs_{b.name}"


def run_layers(args: argparse.Namespace) -> dict[str, Any]:
    from matrix_llm.plotting import plot_lines
    from matrix_llm.tools import analysis

    tables: dict[str, list[dict[str, float]]] = {}
    references: dict[str, tuple[str, list]] = {}
    for name in [args.model] + ([args.compare] if args.compare else []):
        tables.update(_table(name, args, references))
    out = Path(args.output_dir or Path("outputs/analyze") / output_name(args.model, args.compare))
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "models": [args.model] + ([args.compare] if args.compare else []),
        "data": args.data,
        "split": args.split,
        "num_samples": args.num_samples,
        "random_init_seed": args.seed,
        "tables": tables,
    }
    (out / "layers.json").write_text(json.dumps(result, indent=2) + "\n")
    flat = [{"model": name, **row} for name, rows in tables.items() for row in rows]
    _write_csv(out / "layers.csv", flat)
    metrics = [*analysis.LAYER_METRICS, *(["diff_erank"] if not args.no_random_init else [])]
    panels = [
        (
            metric,
            {
                name: ([r["layer"] for r in rows], [r[metric] for r in rows])
                for name, rows in tables.items()
                if metric in rows[0]
            },
        )
        for metric in metrics
    ]
    plot_lines(panels, out / "layers.png", xlabel="layer", title=f"{args.data} ({args.split})")
    _print_table(flat, ["model", "layer", "output", *metrics])
    print(f"wrote {out / 'layers.json'}, layers.csv, layers.png")  # noqa: T201 - CLI output
    return result


def run_lmc(args: argparse.Namespace) -> dict[str, Any]:
    from matrix_llm.plotting import plot_lines
    from matrix_llm.tools import analysis

    load = dict(dtype=args.dtype, revision=args.revision, trust_remote_code=args.trust_remote_code)
    model_a = load_any_model(args.model_a, **load)
    model_b = load_any_model(args.model_b, **load)
    batches = model_batches(args.model_a, model_a, args)
    grid = [i / (args.grid - 1) for i in range(args.grid)]
    result = {
        "model_a": args.model_a,
        "model_b": args.model_b,
        "data": args.data,
        "split": args.split,
        "num_samples": args.num_samples,
        **analysis.lmc_path(model_a, model_b, batches, grid=grid),
    }
    out = Path(
        args.output_dir
        or Path("outputs/analyze") / f"lmc-{Path(args.model_a).name}-{Path(args.model_b).name}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "lmc.json").write_text(json.dumps(result, indent=2) + "\n")
    _write_csv(out / "lmc.csv", result["path"])
    keys = [k for k in ("loss", "accuracy", "matrix_entropy", "effective_rank") if k in result["path"][0]]
    omegas = [p["omega"] for p in result["path"]]
    panels = [(key, {"θ(ω) = ω·A + (1-ω)·B": (omegas, [p[key] for p in result["path"]])}) for key in keys]
    plot_lines(
        panels,
        out / "lmc.png",
        xlabel="ω (0: B, 1: A)",
        title=f"{Path(args.model_a).name} ↔ {Path(args.model_b).name}",
    )
    _print_table(result["path"], ["omega", *keys])
    for key in ("loss_barrier", "accuracy_barrier"):
        if key in result:
            print(f"{key}: {result[key]:.4f}")  # noqa: T201 - CLI output
    print(f"wrote {out / 'lmc.json'}, lmc.csv, lmc.png")  # noqa: T201 - CLI output
    return result


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="digits, an IDX folder, synthetic, a local file/folder or a "
        "Hub dataset (images for vision models, texts for language models)",
    )
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--data_config", default=None, help="Hub dataset config")
    parser.add_argument(
        "--text_column", default="text", help="text column (rows in a training format are joined)"
    )
    parser.add_argument("--label_column", default=None, help="text data: a label column (for loss/accuracy)")
    parser.add_argument("--num_samples", type=int, default=256, help="examples analysed (the first N)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256, help="texts: tokens per example (longer: cut)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    parser.add_argument("--revision", default=None, help="Hub revision of the model(s)")
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument(
        "--output_dir", default=None, help="default: outputs/analyze/<model name> (<A>_vs_<B> with --compare)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = ToolParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=model_source, help="Hub id or local directory")
    parser.add_argument(
        "--compare",
        default=None,
        type=model_source,
        help="a second model analysed on the same data, side by side",
    )
    parser.add_argument("--layers", default=None, help="comma-separated block indices (default: all)")
    parser.add_argument(
        "--no_random_init", action="store_true", help="skip the random-init reference (Diff-eRank)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init reference")
    _common(parser)
    return parser


def _lmc_parser() -> argparse.ArgumentParser:
    parser = ToolParser(
        prog=f"{PROG} lmc",
        description="Loss, accuracy and matrix entropy along the "
        "straight line between two checkpoints of the same architecture.",
    )
    parser.add_argument("model_a", type=model_source, help="checkpoint A (ω = 1)")
    parser.add_argument("model_b", type=model_source, help="checkpoint B (ω = 0)")
    parser.add_argument("--grid", type=int, default=11, help="number of ω values in [0, 1] (default 11)")
    _common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    lmc = bool(argv) and argv[0] == "lmc"
    args = (_lmc_parser() if lmc else _parser()).parse_args(argv[1:] if lmc else argv)
    if args.num_samples < 2 or args.batch_size < 1:
        raise SystemExit(f"{PROG}: --num_samples must be >= 2 and --batch_size >= 1")
    if lmc and args.grid < 2:
        raise SystemExit(f"{PROG} lmc: --grid must be >= 2")
    (run_lmc if lmc else run_layers)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
