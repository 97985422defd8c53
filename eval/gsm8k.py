"""GSM8K accuracy of a model (or base model + PEFT adapter) by greedy generation, scored like lm-eval.

    python eval/gsm8k.py --model PATH_OR_HUB_ID [--adapter PATH] --prompt zero_shot_cot \
        [--max_new_tokens 512] [--batch_size 16] [--limit N] [--data LOCAL_FILE_OR_DIR] --output_dir DIR

Offline with the shared GSM8K copy and a local model directory:

    python eval/gsm8k.py --model outputs/demo --prompt fewshot5 --data ../shared/data/gsm8k \
        --output_dir outputs/eval/demo-fewshot5

Same as ``matrix-llm eval gsm8k ...``: this leaf only forwards its arguments to
:func:`matrix_llm.modes.lm.eval_gsm8k.main` (writes ``samples.jsonl`` and ``results.json``; ``matrix-llm eval rescore
DIR/samples.jsonl`` recomputes the metrics).
"""

from __future__ import annotations

import sys

from matrix_llm.tools.eval import main as eval_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return eval_main(["gsm8k", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
