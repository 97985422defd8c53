"""Self-supervised vision: the two-view augmentation, SSLModel (EMA teacher, probe), SSLObjective for the three
methods, the frozen-feature probes, and `matrix-llm ssl` end to end (save, probes, resume, bad input).

Run: .venv/bin/python -m pytest tests/modes/ssl/test_ssl.py -q
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import kill_and_resume, run_two_processes, watch_trainer
from safetensors.torch import load_file
from transformers import TrainerCallback

from matrix_llm.data.augment import TwoViewAugment
from matrix_llm.models.ssl import SSLModel, cosine_momentum
from matrix_llm.models.tiny import build_image_backbone
from matrix_llm.modes import SSLObjective
from matrix_llm.modes.ssl import command as ssl
from matrix_llm.modes.ssl.evaluate import extract_features, knn_accuracy, linear_probe_accuracy

TINY = [
    "--config",
    "demo/ssl.yaml",
    "--tiny_hidden_size",
    "32",
    "--projector_hidden",
    "64",
    "--projector_dim",
    "32",
    "--predictor_hidden",
    "16",
    "--max_train_samples",
    "128",
    "--max_eval_samples",
    "64",
    "--per_device_train_batch_size",
    "32",
    "--disable_tqdm",
    "true",
]


def _images(n=8, channels=1, seed=0):
    return torch.rand(n, channels, 12, 12, generator=torch.Generator().manual_seed(seed))


# -- augmentation ------------------------------------------------------------------------------------------------


def test_views_are_seeded_per_step_and_leave_the_global_rng_alone():
    augment = TwoViewAugment(size=16, channels=3, seed=1)
    x = _images(channels=3)
    state = torch.random.get_rng_state()
    a1, a2 = augment(x, step=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b1, b2 = TwoViewAugment(size=16, channels=3, seed=1)(x, step=5)  # a resumed run at the same step
    assert a1.shape == a2.shape == (8, 3, 16, 16)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    c1, _ = augment(x, step=6)
    assert not torch.equal(a1, c1)
    d1, _ = augment(x, step=6)  # a second micro-batch of the same step (gradient accumulation): new views
    assert not torch.equal(c1, d1)
    assert not torch.equal(a1, a2)  # the two views differ


def test_each_process_draws_its_own_views(monkeypatch):
    """The seed includes the rank: two processes with the same images at the same step get different views (each
    reproducible), so data-parallel training does not see one set of crops twice."""
    from matrix_llm.data import augment as A

    x = _images(channels=3)
    rank0 = TwoViewAugment(size=16, channels=3, seed=1)(x, step=5)
    monkeypatch.setattr(A, "rank", lambda: 1)
    rank1 = TwoViewAugment(size=16, channels=3, seed=1)(x, step=5)
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[1], rank1[1])
    torch.testing.assert_close(
        TwoViewAugment(size=16, channels=3, seed=1)(x, step=5)[0], rank1[0], rtol=0, atol=0
    )


def test_the_views_knobs_scale_byols_settings():
    from matrix_llm.data.augment import VIEW_2, ViewSettings, byol_views

    assert byol_views() == (ViewSettings(), VIEW_2)  # the defaults are BYOL's
    first, second = byol_views(crop_min_scale=0.5, jitter_strength=0.5)
    assert first.crop_scale == second.crop_scale == (0.5, 1.0)
    assert (first.brightness, second.hue, second.solarize) == (0.2, 0.05, 0.2)
    with pytest.raises(ValueError, match="crop_min_scale"):
        byol_views(crop_min_scale=0.0)


def test_grey_views_and_bad_input():
    augment = TwoViewAugment(size=10, channels=1, mean=(0.5,), std=(0.5,))
    v1, v2 = augment(_images(), step=0)
    assert v1.shape == (8, 1, 10, 10) and v1.min() >= -1.0 - 1e-6 and v1.max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\)"):
        augment(_images(channels=3), step=0)
    with pytest.raises(ValueError, match="`channels` must be 1 or 3"):
        TwoViewAugment(size=10, channels=2)


def test_each_operation_does_what_it_says():
    from matrix_llm.data import augment as A

    x = 0.4 + 0.2 * _images(channels=3)  # mid-range colours: no clamping below
    torch.testing.assert_close(
        A.resized_crop(x, 12, (1.0, 1.0), ratio=(1.0, 1.0)), x
    )  # the whole image, same size
    assert A.resized_crop(x, 5, (0.2, 1.0)).shape == (8, 3, 5, 5)
    torch.testing.assert_close(A.flip(x, 1.0), x.flip(-1))
    torch.testing.assert_close(A.solarize(x, 1.0), torch.where(x >= 0.5, 1 - x, x))
    flat = torch.full((2, 3, 12, 12), 0.3)
    torch.testing.assert_close(A.gaussian_blur(flat, 1.0, 5, (0.5, 1.5)), flat)  # a blur keeps a flat image
    grey = A.grayscale(x, 1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    bright = A.color_jitter(x, A.ViewSettings(jitter=1.0, brightness=0.4, contrast=0, saturation=0, hue=0))
    ratio = bright / x
    assert torch.allclose(
        ratio, ratio.mean(dim=(1, 2, 3), keepdim=True).expand_as(ratio), atol=1e-5
    )  # one factor
    assert 0.6 - 1e-6 <= ratio.min() and ratio.max() <= 1.4 + 1e-6
    hue = A.color_jitter(x, A.ViewSettings(jitter=1.0, brightness=0, contrast=0, saturation=0, hue=0.05))
    torch.testing.assert_close(A._grey(hue), A._grey(x), atol=1e-5, rtol=0)  # a hue rotation keeps the luma
    assert not torch.allclose(hue, x)
    contrast = A.color_jitter(x, A.ViewSettings(jitter=1.0, brightness=0, contrast=0.4, saturation=0, hue=0))
    torch.testing.assert_close(
        A._grey(contrast).mean(dim=(1, 2, 3)), A._grey(x).mean(dim=(1, 2, 3))
    )  # keeps the mean
    untouched = A.color_jitter(x, A.ViewSettings(jitter=0.0))
    torch.testing.assert_close(untouched, x)


# -- model and objective -------------------------------------------------------------------------------------------


def _model(teacher=True, num_classes=3, predictor=16):
    backbone = build_image_backbone("tiny-vit", image_size=12, num_channels=1, hidden_size=32)
    return SSLModel(
        backbone,
        TwoViewAugment(size=12, channels=1),
        projector_hidden=32,
        projector_dim=16,
        predictor_hidden=predictor,
        teacher=teacher,
        num_classes=num_classes,
    )


def test_teacher_starts_as_the_student_and_follows_it_by_ema():
    model = _model()
    assert all(not p.requires_grad for p in model.teacher_backbone.parameters())
    for s, t in zip(model.backbone.parameters(), model.teacher_backbone.parameters(), strict=True):
        assert torch.equal(s, t)
    before = [t.clone() for t in model.teacher_projector.parameters()]
    with torch.no_grad():
        for p in model.projector.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    for b, s, t in zip(
        before, model.projector.parameters(), model.teacher_projector.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)


@pytest.mark.parametrize("method", ["matrix_ssl", "mec", "simclr", "barlow_twins"])
def test_each_method_trains_the_backbone_and_the_probe_sees_detached_features(method):
    teacher = method in ("matrix_ssl", "mec")
    model = _model(teacher=teacher, predictor=16 if teacher else 0)
    objective = SSLObjective(method=method, preset="exact")
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, -100])
    out = objective(model, {"pixel_values": _images(), "labels": labels}, step=0)
    assert torch.isfinite(out.batch_loss)
    assert {"probe_loss", "probe_accuracy", "matrix_entropy", "effective_rank"} <= set(out.metrics)
    out.batch_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert model.probe[-1].weight.grad is not None
    if teacher:
        assert all(p.grad is None for p in model.teacher_backbone.parameters())
        assert objective.callbacks(trainer=None)  # the EMA update
    else:
        assert objective.callbacks(trainer=None) == []
    with pytest.raises(ValueError, match="has no `pixel_values`"):
        objective(model, {"labels": labels}, step=0)


def test_a_batch_of_one_image_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 samples"):
        SSLObjective()(_model(), {"pixel_values": _images(n=1)}, step=0)


# -- frozen-feature probes ----------------------------------------------------------------------------------------


def test_linear_probe_and_knn_on_known_data():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 5
    train_y, test_y = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    train_x = centres[train_y] + rng.normal(size=(60, 4))
    test_x = centres[test_y] + rng.normal(size=(30, 4))
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=5) == 1.0
    # one test point between two training points of class 1 (close) and three of class 0 (far): the weighted
    # vote picks class 1 with T small, the plain majority would pick class 0
    tx = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99], [-0.1, 0.99]])
    ty = np.array([1, 1, 0, 0, 0])
    assert knn_accuracy(tx, ty, np.array([[1.0, 0.05]]), np.array([1]), k=5, temperature=0.01) == 1.0
    with pytest.raises(ValueError, match="k >= 1"):
        knn_accuracy(tx, ty, tx, ty, k=0)


# -- the command ---------------------------------------------------------------------------------------------------


def test_ssl_command_saves_the_backbone_and_measures_it(tmp_path):
    from transformers import AutoModel

    from matrix_llm.tools.eval import main as eval_main

    out = tmp_path / "run"
    argv = [*TINY, "--output_dir", str(out), "--num_train_epochs", "2", "--logging_steps", "2"]
    assert ssl.main([*argv, "--probe_max_train_samples", "50"]) == 0
    backbone = AutoModel.from_pretrained(out / "backbone")
    assert type(backbone).__name__ == "ViTModel"
    results = json.loads((out / "results.json").read_text())
    for key in ("probe_trained", "probe_random_init", "probe_raw_pixels", "knn_trained", "knn_random_init"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["raw_pixels_train_images"] == 50 and results["raw_pixels_features"] == 16 * 16
    assert results["train_size"] == 128 and results["linear_probe_solver"] == "sklearn"
    from conftest import card_eval_results

    assert card_eval_results(out) == {
        "Linear-probe accuracy (frozen backbone, logistic regression)": results["probe_trained"],
        "kNN accuracy (frozen backbone, DINO's weighted k=20, T=0.07)": results["knn_trained"],
    }
    report = (out / "report.md").read_text()
    assert "| trained backbone |" in report
    assert (
        "a seeded class-balanced subset of 50 of the 128 training images (`probe_max_train_samples`)"
        in report
    )
    assert (out / "metrics.png").stat().st_size > 10_000
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "Frozen-feature accuracy" in card
    state = json.loads((out / "trainer_state.json").read_text())
    logged = {k for log in state["log_history"] for k in log}
    assert {"uniformity", "alignment", "teacher_momentum", "probe_accuracy", "eval_probe_accuracy"} <= logged
    assert (
        eval_main(
            [
                "knn",
                "--model",
                str(out / "backbone"),
                "--data",
                "digits",
                "--max_train_samples",
                "200",
                "--output_dir",
                str(tmp_path / "knn"),
            ]
        )
        == 0
    )
    knn = json.loads((tmp_path / "knn" / "results.json").read_text())
    assert {"trained", "random_init"} <= set(knn) and knn["train_size"] == 200
    assert (
        eval_main(
            [
                "probe",
                "--model",
                str(out / "backbone"),
                "--data",
                "digits",
                "--max_train_samples",
                "300",
                "--output_dir",
                str(tmp_path / "probe"),
            ]
        )
        == 0
    )
    probe = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert probe["task"] == "probe" and 0.1 < probe["random_init"] <= 1.0 and 0.1 < probe["trained"] <= 1.0
    assert probe["solver"] == "sklearn"
    with pytest.raises(ValueError, match="no label column 'digit'"):
        eval_main(["probe", "--model", str(out / "backbone"), "--data", "digits", "--label_column", "digit"])


def test_the_objective_is_built_once_and_is_the_one_the_trainer_trains(tmp_path, monkeypatch):
    built, trained = [], []
    init = SSLObjective.__init__

    def counted(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(SSLObjective, "__init__", counted)
    build = ssl.SSLMode.build

    def kept(self, objective):
        trainer = build(self, objective)
        trained.append(trainer.objective)
        return trainer

    monkeypatch.setattr(ssl.SSLMode, "build", kept)
    argv = [*TINY, "--output_dir", str(tmp_path), "--max_steps", "1", "--eval_split", "null"]
    assert ssl.main(argv) == 0
    assert len(built) == 1 and trained == built


def test_unlabelled_data_trains_without_probes(tmp_path):
    out = tmp_path / "run"
    assert (
        ssl.main(
            [
                *TINY,
                "--output_dir",
                str(out),
                "--max_steps",
                "2",
                "--label_column",
                "null",
                "--ssl_method",
                "simclr",
                "--logging_steps",
                "1",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert not any(k.startswith(("probe_", "knn_")) for k in results)
    final = json.loads((out / "all_results.json").read_text())
    assert "eval_loss" in final and "eval_positive_accuracy" in final and "eval_probe_accuracy" not in final


def _losses(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


def test_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    """The EMA teacher (in the checkpoint) and the views (seeded by step) resume exactly."""
    argv = [
        *TINY,
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--eval_split",
        "null",
    ]
    full_dir, cut_dir = kill_and_resume(ssl.main, argv, tmp_path, monkeypatch)
    full, cut = _losses(full_dir), _losses(cut_dir)
    assert set(full) == set(cut) == {1, 2, 3, 4}
    for step in full:
        assert cut[step] == pytest.approx(full[step], rel=1e-6), step
    a, b = (
        load_file(str(full_dir / "model.safetensors")),
        load_file(str(cut_dir / "model.safetensors")),
    )
    teacher = [k for k in a if k.startswith("teacher_backbone.")]
    assert teacher and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_config_problems_are_listed_before_any_model_loads(tmp_path, capsys):
    assert (
        ssl.main(
            [
                *TINY,
                "--ssl_method",
                "byol",
                "--ssl_teacher_momentum",
                "2",
                "--crop_min_scale",
                "0",
                "--output_dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "`ssl_method`" in err and "`ssl_teacher_momentum`" in err and "`crop_min_scale`" in err
    assert ssl.main([*TINY, "--image_column", "pixels", "--output_dir", str(tmp_path / "c")]) == 2
    assert "no image column 'pixels'; the columns are ['image', 'label']" in capsys.readouterr().err
    assert math.isfinite(cosine_momentum(0, 0, 0.99))


def test_zero3_with_a_teacher_is_refused_by_its_own_message_before_any_model_loads(
    tmp_path, capsys, monkeypatch
):
    """matrix_ssl / mec under ZeRO-3: refused by parse_args, no model built (without the refusal, building one under
    ZeRO-3 fails on this machine for another reason, DeepSpeed's missing mpi4py); simclr and barlow_twins have no
    teacher."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(ssl, "build_model", no_model)
    zero3 = tmp_path / "zero3.json"
    zero3.write_text(
        json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"})
    )
    for method in ("matrix_ssl", "mec"):
        assert (
            ssl.main(
                [*TINY, "--deepspeed", str(zero3), "--ssl_method", method, "--output_dir", str(tmp_path)]
            )
            == 2
        )
        assert "`deepspeed`: DeepSpeed ZeRO-3 partitions the EMA teacher" in capsys.readouterr().err
    for method in ("simclr", "barlow_twins"):
        with pytest.raises(AssertionError, match="a model was built"):
            ssl.main(
                [*TINY, "--deepspeed", str(zero3), "--ssl_method", method, "--output_dir", str(tmp_path)]
            )


@pytest.mark.parametrize("how", ["--fsdp", "accelerate-profile"])
def test_fsdp_with_a_teacher_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, how):
    """FSDP shards the teacher as ZeRO-3 does: refused for matrix_ssl / mec, whether asked for with `--fsdp` or by
    `accelerate launch --config_file recipes/accelerate/fsdp2.yaml` (which sets ACCELERATE_USE_FSDP); simclr
    goes on to build its model."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(ssl, "build_model", no_model)
    fsdp = ["--fsdp", "full_shard"] if how == "--fsdp" else []
    if how != "--fsdp":
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for method in ("matrix_ssl", "mec"):
        assert ssl.main([*TINY, *fsdp, "--ssl_method", method, "--output_dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "`fsdp`: FSDP partitions the EMA teacher" in err and "DeepSpeed ZeRO-2" in err
    with pytest.raises(AssertionError, match="a model was built"):
        ssl.main([*TINY, *fsdp, "--ssl_method", "simclr", "--output_dir", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "nodes"),
    [("ddp", False), ("zero2", False), ("ddp", True)],
    ids=["ddp", "zero2", "ddp-two-nodes"],
)
def test_two_processes_keep_every_parameter_and_the_teacher_identical(tmp_path, backend, nodes):
    """2 real CPU processes (gloo): the student, its heads and the EMA teacher are the same on both ranks after
    training (the matrix loss is computed on the gathered global batch, tests/distributed/test_distributed.py);
    also as two localhost "nodes" (two `accelerate launch` machines, --machine_rank 0 / 1)."""
    out = tmp_path / backend
    a, _ = run_two_processes("ssl", [*TINY, "--per_device_train_batch_size", "16"], out, backend, nodes=nodes)
    assert any(k.startswith("teacher_backbone.") for k in a)
    assert (out / "backbone" / "model.safetensors").is_file()


@pytest.mark.parametrize("from_config", [False, True])
def test_a_local_hub_style_backbone_loads_or_starts_from_its_config(tmp_path, from_config):
    """The Hub path offline: a saved ResNet with an image processor (AutoModel / AutoImageProcessor); with
    `init_from_config` the weights are a fresh random init, otherwise the saved ones (learning rate 0 here)."""
    from safetensors.torch import load_file as load
    from transformers import AutoImageProcessor, ViTImageProcessor

    source = tmp_path / "resnet"
    build_image_backbone(
        "tiny-resnet", image_size=16, num_channels=3, hidden_size=16, seed=3
    ).save_pretrained(source)
    ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.4] * 3, image_std=[0.2] * 3
    ).save_pretrained(source)
    out = tmp_path / "run"
    assert (
        ssl.main(
            [
                *TINY,
                "--model_name_or_path",
                str(source),
                "--init_from_config",
                str(from_config).lower(),
                "--output_dir",
                str(out),
                "--max_steps",
                "1",
                "--learning_rate",
                "0",
                "--eval_split",
                "null",
            ]
        )
        == 0
    )
    before, after = load(str(source / "model.safetensors")), load(str(out / "backbone" / "model.safetensors"))
    conv = next(k for k in before if k.endswith("convolution.weight"))
    assert torch.equal(before[conv], after[conv]) is (not from_config)
    assert list(AutoImageProcessor.from_pretrained(out / "backbone").image_mean) == [0.4] * 3


@pytest.mark.parametrize("form", ["logdet", "second_order"])
def test_mmae_is_the_mae_loss_minus_the_weighted_tcr_of_the_encoder_class_tokens(form):
    from matrix_llm.data.augment import MAE_VIEW
    from matrix_llm.losses import TCRLoss
    from matrix_llm.models.ssl import MAEModel
    from matrix_llm.models.tiny import build_mae

    model = MAEModel(
        build_mae(image_size=12, hidden_size=32),
        TwoViewAugment(size=12, channels=1, views=(MAE_VIEW,) * 2),
        num_classes=3,
    )
    objective = SSLObjective(method="mmae", tcr_weight=0.5, tcr_mu=4.0, tcr_form=form)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(0)  # ViT-MAE draws its mask from the global generator
    out = objective(model, {"pixel_values": _images(), "labels": labels}, step=3)
    torch.manual_seed(0)
    model.augment._step = None  # the same views again (a second call of a step draws new ones)
    again = model(pixel_values=_images(), labels=labels, augment_step=3)
    reference = TCRLoss(mu=32 / 4.0, weight=0.5, second_order=form == "second_order")(again.features).total
    probe = torch.nn.functional.cross_entropy(again.probe_logits, labels)
    torch.testing.assert_close(out.batch_loss, again.reconstruction_loss + reference + probe)
    assert (
        "tcr" if form == "logdet" else "uniformity_sq"
    ) in out.metrics and "reconstruction_loss" in out.metrics
    out.batch_loss.backward()
    assert model.mae.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_mmae_command_saves_an_encoder_that_sees_every_patch(tmp_path):
    from transformers import AutoModel

    out = tmp_path / "mmae"
    assert ssl.main([*TINY, "--ssl_method", "mmae", "--output_dir", str(out), "--max_steps", "2"]) == 0
    encoder = AutoModel.from_pretrained(out / "backbone")
    assert type(encoder).__name__ == "ViTMAEModel" and encoder.config.mask_ratio == 0.0
    assert (
        encoder(pixel_values=torch.zeros(1, 1, 16, 16)).last_hidden_state.shape[1] == 17
    )  # 16 patches + CLS
    assert "probe_trained" in json.loads((out / "results.json").read_text())


def test_unlabelled_images_are_still_evaluated_with_the_objective(tmp_path):
    """No labels in the batches (`label_column: null`): evaluate() runs the objective (MatrixTrainer's
    prediction_step) instead of skipping the loss, so eval_loss and the objective's terms are logged."""
    out = tmp_path / "unlabelled"
    assert ssl.main([*TINY, "--label_column", "null", "--max_steps", "2", "--output_dir", str(out)]) == 0
    results = json.loads((out / "all_results.json").read_text())
    assert (
        math.isfinite(results["eval_loss"])
        and "eval_uniformity" in results
        and "eval_probe_accuracy" not in results
    )


# -- what the command builds: each claim against the behaviour (tests/mutations/README.md) -------------------------


class _Snapshots(TrainerCallback):
    """The student (backbone + projector), teacher and logged momentum after every optimizer step; runs after
    the objective's own callbacks (added later), so the EMA update of the step is done."""

    def __init__(self):
        self.init, self.students, self.teachers = None, [], []

    @staticmethod
    def _state(model, *names):
        return {
            f"{n}.{k}": v.detach().clone() for n in names for k, v in getattr(model, n).state_dict().items()
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.init = self._state(model, "backbone", "projector")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.students.append(self._state(model, "backbone", "projector"))
        self.teachers.append(self._state(model, "teacher_backbone", "teacher_projector"))


def test_the_teacher_is_the_ema_of_the_student_with_the_logged_cosine_momenta(tmp_path, monkeypatch):
    """3 steps, base momentum 0.5: the momenta are BYOL's cosine schedule (0.625, 0.875, 1), logged per step, and
    the saved teacher is init -> m·teacher + (1-m)·student after each step; its BatchNorm statistics are the
    student's (copied)."""
    snaps = _Snapshots()
    watch_trainer(monkeypatch, snaps)
    out = tmp_path / "run"
    assert (
        ssl.main(
            [
                *TINY,
                "--output_dir",
                str(out),
                "--max_steps",
                "3",
                "--logging_steps",
                "1",
                "--eval_split",
                "null",
                "--ssl_teacher_momentum",
                "0.5",
                "--learning_rate",
                "1e-2",
            ]
        )
        == 0
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    momenta = [log["teacher_momentum"] for log in history if "teacher_momentum" in log]
    expected = [cosine_momentum(step, 3, 0.5) for step in (1, 2, 3)]
    assert momenta == pytest.approx(expected) and expected == pytest.approx([0.625, 0.875, 1.0])
    teacher = {
        k.replace("backbone.", "teacher_backbone.", 1).replace("projector.", "teacher_projector.", 1): v
        for k, v in snaps.init.items()
    }
    for m, student in zip(expected, snaps.students, strict=True):
        for k, v in student.items():
            t = k.replace("backbone.", "teacher_backbone.", 1).replace("projector.", "teacher_projector.", 1)
            teacher[t] = m * teacher[t] + (1 - m) * v if v.is_floating_point() and "running_" not in k else v
    saved = load_file(str(out / "model.safetensors"))
    moved = 0
    for k, v in teacher.items():
        if k in saved:
            torch.testing.assert_close(saved[k], v.to(saved[k].dtype), rtol=1e-5, atol=1e-6, msg=k)
            init = snaps.init[k.replace("teacher_", "", 1)]
            moved += int(init.is_floating_point() and not torch.allclose(saved[k], init))
    assert moved > 10  # the teacher left its init (it is not the student either: momentum < 1 at steps 1, 2)
    last = snaps.students[-1]
    assert any(
        not torch.allclose(saved[k.replace("backbone.", "teacher_backbone.", 1)], v)
        for k, v in last.items()
        if k.startswith("backbone.") and v.is_floating_point()
    )


def test_the_targets_come_from_the_teacher_not_the_student():
    model = _model()
    with torch.no_grad():
        for p in (*model.teacher_backbone.parameters(), *model.teacher_projector.parameters()):
            p.mul_(-1.5)  # a teacher that differs from the student (as after any training step)
    model.eval()  # BatchNorm statistics do not move between the calls below
    x = _images()
    out = model(pixel_values=x, augment_step=2)
    model.augment._step = None  # the same views again
    views = torch.cat(model.augment(x, 2))
    with torch.no_grad():
        teacher = model.teacher_projector(model.pooled(views, model.teacher_backbone))
        student = model.projector(model.pooled(views))
    torch.testing.assert_close(torch.cat([out.p1, out.p2]), teacher)
    assert not torch.allclose(teacher, student)


@pytest.mark.parametrize("mae", [False, True])
def test_the_online_probe_never_trains_the_backbone(mae):
    """Labels change only the probe's gradient: the backbone's gradient of the objective is the same with and
    without labels, and the probe's cross-entropy alone sends nothing into the backbone."""
    import copy

    from matrix_llm.data.augment import MAE_VIEW
    from matrix_llm.models.ssl import MAEModel
    from matrix_llm.models.tiny import build_mae

    if mae:
        model = MAEModel(
            build_mae(image_size=12, hidden_size=32),
            TwoViewAugment(size=12, channels=1, views=(MAE_VIEW,) * 2),
            num_classes=3,
        )
        objective = SSLObjective(method="mmae")
    else:
        model, objective = _model(), SSLObjective(method="matrix_ssl")
    twin = copy.deepcopy(model)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(0)  # ViT-MAE's mask
    objective(model, {"pixel_values": _images(), "labels": labels}, step=1).batch_loss.backward()
    torch.manual_seed(0)
    objective(twin, {"pixel_values": _images()}, step=1).batch_loss.backward()
    for (name, a), b in zip(model.backbone.named_parameters(), twin.backbone.parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)
    assert twin.probe[-1].weight.grad is None and model.probe[-1].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    out = model(pixel_values=_images(), labels=labels, augment_step=1)
    torch.nn.functional.cross_entropy(out.probe_logits, labels).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.backbone.parameters())


class _Outputs(torch.nn.Module):
    """A stand-in network that returns fixed projections (the objective's losses on known inputs)."""

    def __init__(self, teacher=True, mae=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.z1, self.z2, self.p1, self.p2 = (
            torch.randn(12, 8, generator=g, dtype=torch.float64) for _ in range(4)
        )
        self.teacher, self.mae = teacher, mae

    def forward(self, pixel_values, labels=None, augment_step=0):
        from matrix_llm.models.ssl import MAEOutput, SSLOutput

        if self.mae:
            return MAEOutput(reconstruction_loss=torch.tensor(0.0, dtype=torch.float64), features=self.z1)
        extra = dict(p1=self.p1, p2=self.p2) if self.teacher else {}
        return SSLOutput(z1=self.z1, z2=self.z2, features=self.z1, **extra)


def _command_loss(*fields):
    """The objective `matrix-llm ssl` builds from these fields (through the config), on _Outputs' projections."""
    _, _, args = ssl.parse_args([*TINY, "--output_dir", "unused", *fields])
    objective = SSLObjective.from_args(args)
    from matrix_llm.modes.ssl.methods import METHODS

    method = args.ssl_method
    net = _Outputs(teacher=METHODS[method].teacher, mae=method == "mmae")
    return objective(net, {"pixel_values": torch.zeros(12, 1, 4, 4)}, step=0).batch_loss, net


def _reference(net, method, **settings):
    from matrix_llm.losses import BarlowTwinsLoss, MatrixSSLLoss, MECLoss, NTXentLoss, TCRLoss

    if method == "barlow_twins":
        return BarlowTwinsLoss(gather=False, **settings)(net.z1, net.z2).total

    if method == "matrix_ssl":
        return MatrixSSLLoss(**settings)(net.z1, net.z2, net.p1, net.p2).total
    if method == "mec":
        return MECLoss(**settings)(net.z1, net.z2, net.p1, net.p2).total
    if method == "simclr":
        return NTXentLoss(gather=False, **settings)(net.z1, net.z2).total
    mu, form = settings.pop("tcr_mu", 3.0), settings.pop("tcr_form", "logdet")
    return TCRLoss(mu=8 / mu, second_order=form == "second_order", **settings)(net.z1).total


@pytest.mark.parametrize(
    ("method", "field", "value", "setting"),
    [
        ("matrix_ssl", "ssl_preset", "official", {"preset": "official", "check": False}),
        ("matrix_ssl", "ssl_gamma", "0.3", {"gamma": 0.3}),
        ("matrix_ssl", "ssl_lamb", "0.2", {"lamb": 0.2}),
        ("matrix_ssl", "ssl_mu", "0.9", {"mu": 0.9}),
        ("mec", "ssl_eps_sq", "8", {"eps_sq": 8.0}),
        ("simclr", "ssl_temperature", "0.5", {"temperature": 0.5}),
        ("barlow_twins", "ssl_barlow_lambda", "0.1", {"lamb": 0.1}),
        ("mmae", "ssl_tcr_weight", "0.5", {"weight": 0.5}),
        ("mmae", "ssl_tcr_mu", "1.5", {"tcr_mu": 1.5, "weight": 0.01}),
        ("mmae", "ssl_tcr_form", "second_order", {"tcr_form": "second_order", "weight": 0.01}),
    ],
)
def test_each_ssl_setting_reaches_the_loss_the_command_builds(method, field, value, setting):
    default, net = _command_loss("--ssl_method", method)
    changed, _ = _command_loss("--ssl_method", method, "--" + field, value)
    base = {"weight": 0.01} if method == "mmae" else {}
    torch.testing.assert_close(default, _reference(net, method, **base))
    torch.testing.assert_close(changed, _reference(net, method, **setting))
    assert not torch.allclose(changed, default), field


def test_the_taylor_order_reaches_the_official_preset():
    official = ("--ssl_method", "matrix_ssl", "--ssl_preset", "official")
    four, net = _command_loss(*official)
    two, _ = _command_loss(*official, "--ssl_order", "2")
    torch.testing.assert_close(two, _reference(net, "matrix_ssl", preset="official", order=2, check=False))
    assert not torch.allclose(two, four)


@pytest.mark.parametrize("method", ["matrix_ssl", "mec", "simclr", "barlow_twins", "mmae"])
def test_the_command_builds_its_loss_over_every_process(method):
    """`gather`: the projections of every rank enter the loss (what the two-process test in
    tests/distributed/test_distributed.py checks by value)."""
    _, _, args = ssl.parse_args([*TINY, "--output_dir", "unused", "--ssl_method", method])
    assert SSLObjective.from_args(args).loss.gather is True


def test_the_views_the_command_builds_follow_crop_min_scale_and_jitter_strength():
    from matrix_llm.data.augment import MAE_VIEW, byol_views

    def views(*fields):
        model_args, data_args, args = ssl.parse_args([*TINY, "--output_dir", "unused", *fields])
        return ssl.build_model(model_args, data_args, args, num_classes=0)[0].augment.views

    assert views() == byol_views()
    assert views("--crop_min_scale", "0.5", "--jitter_strength", "0.3") == byol_views(
        crop_min_scale=0.5, jitter_strength=0.3
    )
    mae = views("--ssl_method", "mmae", "--crop_min_scale", "0.6")
    assert (
        mae[0].crop_scale == (0.6, 1.0) and mae[0].flip == MAE_VIEW.flip and MAE_VIEW.crop_scale != (0.6, 1.0)
    )


def test_the_end_of_run_baseline_is_a_fresh_random_init_and_pixels_are_raw():
    """`probe_results` (what `matrix-llm ssl` reports): a backbone with all weights 0 (constant features) scores
    near one class; the random-init row is a fresh seeded init of its architecture, not the backbone."""
    from matrix_llm.data.images import ImageCollator, load_image_dataset
    from matrix_llm.models.tiny import random_init

    dead = build_image_backbone("tiny-vit", image_size=8, num_channels=1, hidden_size=32, seed=1)
    with torch.no_grad():
        for p in dead.parameters():
            p.zero_()
    train = load_image_dataset("digits", "train").select(range(300))
    test = load_image_dataset("digits", "test").select(range(200))
    collator = ImageCollator(image_size=8, channels=1)
    results = ssl.probe_results(dead, 3, train, test, collator)
    fresh = random_init(type(dead), dead.config, seed=3)
    features = [*extract_features(fresh, train, collator), *extract_features(fresh, test, collator)]
    assert results["probe_random_init"] == pytest.approx(linear_probe_accuracy(*features))
    assert results["knn_random_init"] == pytest.approx(knn_accuracy(*features))
    assert results["probe_random_init"] > results["probe_trained"] + 0.3
    assert results["knn_random_init"] > results["knn_trained"] + 0.1
    pixels = [collator([rows[i] for i in range(len(rows))]) for rows in (train, test)]
    raw = linear_probe_accuracy(
        pixels[0]["pixel_values"].flatten(1).numpy(),
        pixels[0]["labels"].numpy(),
        pixels[1]["pixel_values"].flatten(1).numpy(),
        pixels[1]["labels"].numpy(),
    )
    assert results["probe_raw_pixels"] == pytest.approx(raw) and raw > 0.8


@pytest.mark.parametrize(
    ("method", "teacher", "predictor"),
    [
        ("matrix_ssl", True, True),
        ("mec", True, True),
        ("simclr", False, False),
        ("barlow_twins", False, False),
    ],
)
def test_the_network_the_command_builds_is_the_methods_row(method, teacher, predictor):
    """modes/ssl/methods.py decides teacher and predictor once: the command builds what the row says, the objective
    calls the loss with the row's inputs, and the card names the method."""
    from matrix_llm.modes.ssl.methods import METHODS

    model_args, data_args, args = ssl.parse_args([*TINY, "--output_dir", "unused", "--ssl_method", method])
    model = ssl.build_model(model_args, data_args, args, num_classes=0)[0]
    assert (METHODS[method].teacher, METHODS[method].predictor) == (teacher, predictor)
    assert model.has_teacher is teacher and isinstance(model.predictor, torch.nn.Identity) is not predictor
    objective = SSLObjective.from_args(args)
    assert objective.uses_teacher is teacher and bool(objective.callbacks(trainer=None)) is teacher
    assert method.replace("_", "-") in objective.card(args).tags


def test_barlow_twins_trains_through_the_command(tmp_path):
    out = tmp_path / "barlow"
    assert (
        ssl.main(
            [
                *TINY,
                "--ssl_method",
                "barlow_twins",
                "--ssl_barlow_lambda",
                "0.01",
                "--max_steps",
                "2",
                "--logging_steps",
                "1",
                "--eval_split",
                "null",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    logged = {k for log in json.loads((out / "trainer_state.json").read_text())["log_history"] for k in log}
    assert {"on_diagonal", "off_diagonal"} <= logged and "teacher_momentum" not in logged
    assert "| `ssl_barlow_lambda` | 0.01 |" in (out / "README.md").read_text()
    saved = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith(("teacher_", "predictor.")) for k in saved)
