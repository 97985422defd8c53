"""Tests for matrix_llm.modes.lm.evaluate: scoring, `matrix-llm eval gsm8k` on a saved tiny model, `rescore`.

.venv/bin/python -m pytest tests/modes/lm/test_evaluation.py -q
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

from matrix_llm.modes.lm.eval_gsm8k import package_versions, rescore
from matrix_llm.modes.lm.evaluate import N_BOOT, evaluate_gsm8k, read_jsonl, score_samples, write_jsonl
from matrix_llm.tools.eval import main


def make_scorable_items(
    model, tokenizer, n: int, *, prompt: str = "qa", max_new_tokens: int = 16, fewshot_examples=None
):
    """Synthetic problems whose references are set so that a random tiny model gets some of them right.

    The model's own flexible answer becomes the reference of every other item that has one, so accuracy is
    neither 0 nor 1 and comparisons between code paths are not trivially equal.
    """
    from matrix_llm.data.synthetic import synthetic_dataset

    items = [dict(r) for r in synthetic_dataset(n, seed=1)]
    probe = evaluate_gsm8k(
        model.eval(),
        tokenizer,
        items,
        prompt=prompt,
        fewshot_examples=fewshot_examples,
        max_new_tokens=max_new_tokens,
        batch_size=4,
        progress=False,
    )
    for i, s in enumerate(probe.samples):
        if i % 2 == 0 and s["extracted_flexible"] is not None:
            items[i]["answer"] = items[i]["answer"].rsplit("#### ", 1)[0] + "#### " + s["extracted_flexible"]
    return items


def _sample(completion, reference="18", strict_mode="strict", finish_reason="eos"):
    return {
        "completion": completion,
        "reference": reference,
        "strict_mode": strict_mode,
        "finish_reason": finish_reason,
    }


def test_score_samples_lm_eval_filters_numeric_and_no_answer():
    samples = [
        _sample("so 9 + 9 = 18\n#### 18"),  # strict + flexible
        _sample("#### 18.00"),  # lm-eval exact match fails (18.00 != 18), numeric matches
        _sample("it is 18 dollars", finish_reason="length"),  # flexible only, no strict answer
        _sample("#### 17\nthen 18"),  # strict wrong, flexible (last number) right
        _sample("The answer is: 18"),  # MetaMath's format
        _sample("The answer is 18. ok", strict_mode="cot"),  # cot8's strict filter
    ]
    m = score_samples(samples)
    assert m["n"] == 6
    assert [s["correct_strict"] for s in samples] == [True, False, False, False, False, True]
    assert [s["correct_strict_numeric"] for s in samples] == [True, True, False, False, False, True]
    assert [s["correct_flexible"] for s in samples] == [True, False, True, True, True, True]
    assert [s["correct_metamath"] for s in samples] == [False, False, False, False, True, False]
    assert all(s["correct"] == s["correct_strict"] for s in samples)
    assert m["strict_accuracy"] == 2 / 6 and m["strict_accuracy_numeric"] == 3 / 6
    assert m["flexible_accuracy"] == 5 / 6 and m["metamath_accuracy"] == 1 / 6
    assert m["no_answer_rate"] == 2 / 6  # samples 2 and 4 have no strict answer
    assert [s["extracted_strict"] for s in samples] == ["18", "18.00", None, "17", None, "18"]
    assert m["truncated_rate"] == 1 / 6
    assert m["n_boot"] == N_BOOT


def test_bootstrap_stderr_is_seeded_and_close_to_the_analytic_value():
    samples = [_sample("#### 18" if i % 3 == 0 else "#### 1") for i in range(300)]
    a, b = score_samples(samples), score_samples([dict(s) for s in samples])
    assert a == b  # bit-identical
    p = 100 / 300
    assert a["strict_accuracy"] == p
    assert a["strict_accuracy_stderr_clt"] == pytest.approx(math.sqrt(p * (1 - p) / 299))
    assert a["strict_accuracy_stderr"] == pytest.approx(a["strict_accuracy_stderr_clt"], rel=0.05)
    assert (
        score_samples([dict(s) for s in samples], seed=1)["strict_accuracy_stderr"]
        != a["strict_accuracy_stderr"]
    )


def test_score_samples_errors():
    with pytest.raises(ValueError, match="no samples"):
        score_samples([])
    with pytest.raises(ValueError, match="strict_mode"):
        score_samples([{"completion": "x", "reference": "1"}])


@pytest.fixture
def saved_model(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "model"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_eval_gsm8k_cli_writes_samples_and_results_and_rescore_reproduces_them(
    tmp_path, saved_model, tiny_model, tiny_tokenizer
):
    from matrix_llm.cli import main as cli_main

    items = make_scorable_items(tiny_model, tiny_tokenizer, 6)
    data = tmp_path / "problems.jsonl"
    write_jsonl(data, items)
    out = tmp_path / "run"
    rc = cli_main(
        [
            "eval",
            "gsm8k",
            "--model",
            str(saved_model),
            "--prompt",
            "qa",
            "--data",
            str(data),
            "--max_new_tokens",
            "16",
            "--batch_size",
            "4",
            "--output_dir",
            str(out),
            "--no_progress",
        ]
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    samples = read_jsonl(out / "samples.jsonl")
    m = results["metrics"]
    assert m["n"] == len(samples) == 6
    assert 0 < m["flexible_accuracy"] < 1  # the references were built so
    for key in (
        "question",
        "prompt",
        "completion",
        "extracted_strict",
        "extracted_flexible",
        "reference",
        "correct",
        "finish_reason",
    ):
        assert key in samples[0]
    assert [s["question"] for s in samples] == [it["question"] for it in items]
    assert results["model"] == str(saved_model) and results["adapter"] is None and results["prompt"] == "qa"
    assert results["decoding"]["max_new_tokens"] == 16 and results["decoding"]["strategy"] == "greedy"
    assert results["decoding"]["dtype"] == "float32" and results["prompts_over_context"] == 0
    assert {"torch", "transformers", "matrix_llm"} <= set(results["versions"])
    assert results["versions"] == package_versions()

    # the hand-off to lm-evaluation-harness: its results block, its per-sample file, the line that reproduces it
    block = results["lm_eval"]["results"]["gsm8k"]
    assert block["exact_match,strict-match"] == m["strict_accuracy"]
    assert block["exact_match,flexible-extract"] == m["flexible_accuracy"]
    assert block["exact_match_stderr,strict-match"] == pytest.approx(
        statistics.stdev([float(s["correct_strict"]) for s in samples]) / len(samples) ** 0.5
    )
    assert results["lm_eval"]["n-shot"] == {"gsm8k": 0}
    assert results["lm_eval_command"] == (
        f"lm_eval --model hf --model_args pretrained={saved_model} --tasks gsm8k --num_fewshot 0 "
        "--batch_size 4 --gen_kwargs max_gen_toks=16"
    )
    lm_eval_rows = read_jsonl(out / "samples_gsm8k.jsonl")
    assert [(r["doc_id"], r["filter"]) for r in lm_eval_rows] == [
        (i, f) for i in range(6) for f in ("strict-match", "flexible-extract")
    ]
    for row in lm_eval_rows:
        sample = samples[row["doc_id"]]
        key = "correct_strict" if row["filter"] == "strict-match" else "correct_flexible"
        assert row["exact_match"] == float(sample[key]) and row["resps"] == [[sample["completion"]]]
        assert (
            row["arguments"]["gen_args_0"]["arg_0"] == sample["prompt"]
            and row["target"] == items[row["doc_id"]]["answer"]
        )

    # the same numbers as a direct in-process evaluation
    direct = evaluate_gsm8k(
        tiny_model.eval(), tiny_tokenizer, items, prompt="qa", max_new_tokens=16, batch_size=2, progress=False
    )
    assert direct.metrics == m
    assert [s["completion"] for s in direct.samples] == [s["completion"] for s in samples]

    # rescore: exactly the same metrics, from samples.jsonl alone
    assert main(["rescore", str(out / "samples.jsonl"), "--output", str(tmp_path / "re.json")]) == 0
    rescored = json.loads((tmp_path / "re.json").read_text())
    assert rescored["metrics"] == m
    assert rescored["model"] == results["model"]
    # rescore recomputes the scoring fields from the completions: a tampered field is repaired
    samples[0]["correct_strict"] = not samples[0]["correct_strict"]
    write_jsonl(tmp_path / "tampered.jsonl", samples)
    assert rescore(tmp_path / "tampered.jsonl")["metrics"] == m


def test_eval_gsm8k_fewshot5_uses_lm_eval_draw_from_train_split(tmp_path, saved_model, gsm8k_dir):
    from matrix_llm.data.gsm8k import lm_eval_fewshot_indices, load_gsm8k

    out = tmp_path / "run"
    assert (
        main(
            [
                "gsm8k",
                "--model",
                str(saved_model),
                "--prompt",
                "fewshot5",
                "--data",
                str(gsm8k_dir),
                "--limit",
                "2",
                "--max_new_tokens",
                "4",
                "--output_dir",
                str(out),
                "--no_progress",
            ]
        )
        == 0
    )
    samples = read_jsonl(out / "samples.jsonl")
    results = json.loads((out / "results.json").read_text())
    assert results["fewshot_sampler"] == "lm_eval" and results["num_fewshot"] == 5
    train = load_gsm8k(str(gsm8k_dir), split="train")
    test = load_gsm8k(str(gsm8k_dir), split="test")
    draw = lm_eval_fewshot_indices(len(train), 2, k=5)
    for doc, s in enumerate(samples):
        shots = s["prompt"].split("\n\n")
        assert len(shots) >= 6
        assert s["prompt"].startswith(f"Question: {train[draw[doc][0]]['question']}\nAnswer: ")
        assert s["prompt"].endswith(f"Question: {test[doc]['question']}\nAnswer:")


def test_eval_main_rejects_unknown_task(capsys):
    assert main(["mmlu"]) == 2
    assert "unknown task" in capsys.readouterr().err


@pytest.mark.network
def test_eval_gsm8k_from_the_hub(tmp_path, saved_model):  # pragma: no cover - needs the Hub
    assert (
        main(
            [
                "gsm8k",
                "--model",
                str(saved_model),
                "--prompt",
                "qa",
                "--limit",
                "2",
                "--max_new_tokens",
                "4",
                "--output_dir",
                str(tmp_path),
                "--no_progress",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["metrics"]["n"] == 2


def test_eval_leaf_script_forwards_to_matrix_llm_eval_gsm8k(tmp_path, saved_model, gsm8k_dir):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "eval" / "gsm8k.py"
    spec = importlib.util.spec_from_file_location("eval_gsm8k_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (
        module.main(
            [
                "--model",
                str(saved_model),
                "--prompt",
                "qa",
                "--data",
                str(gsm8k_dir),
                "--limit",
                "2",
                "--max_new_tokens",
                "4",
                "--output_dir",
                str(tmp_path),
                "--no_progress",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["metrics"]["n"] == 2


def test_single_sample_has_no_stderr_and_round_trips_through_json():
    m = score_samples([_sample("#### 18")])
    assert m["strict_accuracy"] == 1.0 and m["strict_accuracy_stderr"] is None
    assert json.loads(json.dumps(m)) == m


def test_vllm_backend_without_vllm_exits_with_a_clear_message(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    with pytest.raises(SystemExit, match="pip install vllm"):
        main(["gsm8k", "--model", "unused", "--backend", "vllm", "--output_dir", str(tmp_path)])


def test_eval_gsm8k_in_bfloat16_on_cpu(tmp_path, saved_model, tiny_model, tiny_tokenizer):
    """`--dtype bfloat16` runs on a CPU too (only `auto` -> bf16 selection needs a GPU): bf16 weights, greedy
    generation, the same file format, scores in [0, 1]."""
    items = make_scorable_items(tiny_model, tiny_tokenizer, 6)
    write_jsonl(tmp_path / "problems.jsonl", items)
    out = tmp_path / "bf16"
    rc = main(
        [
            "gsm8k",
            "--model",
            str(saved_model),
            "--prompt",
            "qa",
            "--data",
            str(tmp_path / "problems.jsonl"),
            "--max_new_tokens",
            "16",
            "--output_dir",
            str(out),
            "--dtype",
            "bfloat16",
            "--device",
            "cpu",
            "--no_progress",
        ]
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["decoding"]["dtype"] == "bfloat16" and results["metrics"]["n"] == 6
    assert 0.0 <= results["metrics"]["flexible_accuracy"] <= 1.0
    assert len(read_jsonl(out / "samples.jsonl")) == 6


@pytest.mark.gpu
def test_eval_gsm8k_on_gpu_uses_bf16_and_scores(tmp_path, saved_model, tiny_model, tiny_tokenizer):
    """`--dtype auto` on a CUDA GPU: bf16 weights, greedy generation on the GPU, the same file format."""
    import torch

    items = make_scorable_items(tiny_model, tiny_tokenizer, 6)
    write_jsonl(tmp_path / "problems.jsonl", items)
    out = tmp_path / "gpu"
    rc = main(
        [
            "gsm8k",
            "--model",
            str(saved_model),
            "--prompt",
            "qa",
            "--data",
            str(tmp_path / "problems.jsonl"),
            "--max_new_tokens",
            "16",
            "--output_dir",
            str(out),
            "--dtype",
            "auto",
            "--no_progress",
        ]
    )
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    assert results["decoding"]["dtype"] == expected and results["metrics"]["n"] == 6


def test_eval_defaults_to_the_trained_template_and_the_model_folder(saved_model, gsm8k_dir, capsys):
    """No --prompt: the template `matrix-llm sft` recorded (mutation caught: the old fixed zero_shot_cot default,
    which scores 0 on a qa-trained model); no --output_dir: under the model, never a shared fixed folder; a second
    run does not overwrite the first without --overwrite."""
    (saved_model / "matrix_llm_run.json").write_text(json.dumps({"objective": "lm", "template": "qa"}))
    argv = [
        "gsm8k",
        "--model",
        str(saved_model),
        "--data",
        str(gsm8k_dir),
        "--limit",
        "2",
        "--max_new_tokens",
        "4",
        "--no_progress",
    ]
    assert main(argv) == 0
    assert "prompt 'qa'" in capsys.readouterr().err
    results = json.loads((saved_model / "eval" / "gsm8k-qa" / "results.json").read_text())
    assert results["prompt"] == "qa"
    with pytest.raises(SystemExit, match="--overwrite"):
        main(argv)
    assert main([*argv, "--overwrite"]) == 0


def test_eval_missing_local_model_says_so_and_leaves_nothing(tmp_path, gsm8k_dir, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(
            [
                "gsm8k",
                "--model",
                str(tmp_path / "no" / "model"),
                "--data",
                str(gsm8k_dir),
                "--output_dir",
                str(out),
            ]
        )
    assert "no such directory" in capsys.readouterr().err and not out.exists()


def test_metamath_accuracy_only_where_the_format_is_used():
    samples = [
        {"completion": "so #### 4", "reference": "4", "strict_mode": "strict"},
        {"completion": "so #### 5", "reference": "6", "strict_mode": "strict"},
    ]
    assert (
        "metamath_accuracy" not in score_samples(samples) and score_samples(samples)["strict_accuracy"] == 0.5
    )
    samples[1]["completion"] = "The answer is: 6"
    assert score_samples(samples)["metamath_accuracy"] == 0.5


def test_eval_gsm8k_with_an_adapter_generates_like_the_merged_model(
    tmp_path, saved_model, tiny_model, tiny_tokenizer, gsm8k_dir
):
    """`--adapter` loads a PEFT adapter on top of `--model`: completions equal the merged model's and differ
    from the base model's (non-zero LoRA B). Mutation caught: ignoring --adapter."""
    from conftest import merged_copy, nonzero_lora

    peft_model = nonzero_lora(tiny_model)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    items = [
        {"question": r["question"], "answer": r["answer"]} for r in read_jsonl(gsm8k_dir / "test.jsonl")[:3]
    ]

    def completions(model):
        out = evaluate_gsm8k(
            model, tiny_tokenizer, items, prompt="qa", max_new_tokens=8, batch_size=3, progress=False
        )
        return [s["completion"] for s in out.samples]

    out = tmp_path / "eval"
    assert (
        main(
            [
                "gsm8k",
                "--model",
                str(saved_model),
                "--adapter",
                str(adapter),
                "--prompt",
                "qa",
                "--data",
                str(gsm8k_dir),
                "--limit",
                "3",
                "--max_new_tokens",
                "8",
                "--batch_size",
                "3",
                "--output_dir",
                str(out),
                "--no_progress",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    got = [s["completion"] for s in read_jsonl(out / "samples.jsonl")]
    assert got == completions(merged_copy(peft_model))
    assert got != completions(tiny_model.eval())
    assert json.loads((out / "results.json").read_text())["adapter"] == str(adapter)


def _bos_adding(tokenizer):
    """A copy of ``tokenizer`` that adds its BOS itself, as Llama's does (lm-eval lets the tokenizer add it)."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tokenizer)
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    return tok


def _both_backends(tmp_path, model_dir, data, prompt, *extra):
    """``eval gsm8k`` with ``--backend hf`` and ``--backend lm_eval``: each run's results.json and samples."""
    from matrix_llm.cli import main as cli_main

    runs = {}
    for backend in ("hf", "lm_eval"):
        out = tmp_path / backend
        argv = ["eval", "gsm8k", "--model", str(model_dir), "--prompt", prompt, "--data", str(data), *extra]
        argv += ["--max_new_tokens", "16", "--batch_size", "4", "--output_dir", str(out), "--no_progress"]
        assert cli_main([*argv, "--backend", backend]) == 0
        runs[backend] = (json.loads((out / "results.json").read_text()), read_jsonl(out / "samples.jsonl"))
    return runs["hf"], runs["lm_eval"]


def _assert_scored_alike(ours, our_samples, theirs, their_samples, task):
    """lm-eval generated from matrix_llm's prompts (its samples record lm-eval's own contexts), to the same
    completions, scored alike by both and by lm-eval itself."""
    assert [s["prompt"] for s in their_samples] == [s["prompt"] for s in our_samples]
    assert [s["completion"] for s in their_samples] == [s["completion"] for s in our_samples]
    for key in ("strict_accuracy", "flexible_accuracy", "no_answer_rate"):
        assert theirs["metrics"][key] == ours["metrics"][key], key
    assert list(theirs["lm_eval"]["results"]) == [task]
    lm_eval_own = theirs["lm_eval"]["results"][task]
    assert lm_eval_own["exact_match,strict-match"] == ours["metrics"]["strict_accuracy"]
    assert lm_eval_own["exact_match,flexible-extract"] == ours["metrics"]["flexible_accuracy"]


@pytest.mark.slow
def test_lm_eval_itself_and_eval_gsm8k_score_every_sample_alike(tmp_path, tiny_model, tiny_tokenizer):
    """A tiny saved model whose tokenizer adds its BOS itself (as Llama's does): lm-evaluation-harness's own
    ``simple_evaluate`` with its ``HFLM`` on the local copy of its ``gsm8k`` task (``--backend lm_eval``) and
    ``matrix-llm eval gsm8k`` (``--backend hf``) give the same completion for every question, the same metrics,
    and lm-eval's own ``exact_match`` equals ours. Mutation caught: the hf backend's prompts without their BOS."""
    pytest.importorskip("lm_eval")  # the dev extra has it; the floors environment (tests/floors.txt) does not
    tok = _bos_adding(tiny_tokenizer)
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "problems.jsonl"
    write_jsonl(data, make_scorable_items(tiny_model, tiny_tokenizer, 8))
    (ours, our_samples), (theirs, their_samples) = _both_backends(tmp_path, model_dir, data, "qa")
    assert 0 < ours["metrics"]["flexible_accuracy"] < 1
    _assert_scored_alike(ours, our_samples, theirs, their_samples, "gsm8k")


@pytest.mark.slow
@pytest.mark.parametrize(
    "prompt, sampler", [("fewshot5", "lm_eval"), ("fewshot5", "first_n"), ("cot8", None)]
)
def test_lm_eval_itself_runs_the_few_shot_tasks_as_eval_gsm8k_does(tmp_path, tiny_tokenizer, prompt, sampler):
    """``fewshot5`` (lm-eval's ``gsm8k`` 5-shot: its seeded per-document draw from the train split, or the first 5)
    and ``cot8`` (its ``gsm8k_cot``, the 8 Wei et al. exemplars) through lm-eval itself give the completion of
    every question and the metrics that ``--backend hf`` gives: the shots lm-eval draws are the ones matrix_llm
    puts in its prompts."""
    pytest.importorskip("lm_eval")
    from matrix_llm.data.gsm8k import lm_eval_fewshot_indices
    from matrix_llm.data.synthetic import synthetic_dataset
    from matrix_llm.models.tiny import build_llama

    tok = _bos_adding(tiny_tokenizer)
    # long enough for cot8's eight exemplars (about 1,000 tokens at this vocabulary)
    model = build_llama(
        tiny_tokenizer, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=4096
    )
    model_dir, data = tmp_path / "model", tmp_path / "data"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    train = [dict(r) for r in synthetic_dataset(12, seed=2)]
    n = 6
    shots = None
    if prompt == "fewshot5":
        draws = [range(5)] * n if sampler == "first_n" else lm_eval_fewshot_indices(len(train), n, k=5)
        shots = [[train[j] for j in draw] for draw in draws]
    items = make_scorable_items(model, tiny_tokenizer, n, prompt=prompt, fewshot_examples=shots)
    data.mkdir()
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", items)
    extra = ["--fewshot_sampler", sampler] if sampler else []
    (ours, our_samples), (theirs, their_samples) = _both_backends(tmp_path, model_dir, data, prompt, *extra)
    assert ours["prompts_over_context"] == 0
    if prompt == "fewshot5":  # (after cot8's long exemplars the random model writes no number)
        assert 0 < ours["metrics"]["flexible_accuracy"] < 1
    _assert_scored_alike(
        ours, our_samples, theirs, their_samples, "gsm8k_cot" if prompt == "cot8" else "gsm8k"
    )
    if prompt == "fewshot5":
        assert all(s["prompt"].count("Question: ") == 6 for s in their_samples)
    task = "gsm8k_cot" if prompt == "cot8" else "gsm8k"  # the per-sample file is named after lm-eval's task
    assert len(read_jsonl(tmp_path / "lm_eval" / f"samples_{task}.jsonl")) == 2 * n


def test_lm_eval_backend_refuses_prompts_lm_eval_has_no_task_for():
    pytest.importorskip("lm_eval")
    with pytest.raises(
        SystemExit, match="--backend lm_eval runs lm-eval's own tasks, which exist for --prompt qa, "
    ):
        main(["gsm8k", "--model", "unused", "--prompt", "alpaca", "--backend", "lm_eval"])
