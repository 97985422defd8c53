"""The mutation catalogue: each entry a claim of the README or the docs, a one-line break of the code that makes
the claim false, and the tests that fail on it. ``check.py`` applies each break in a scratch copy and runs its
tests; ``tests/test_mutations.py`` keeps every entry's text present in its file (so the catalogue cannot rot
silently) and the README table in step with this list.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTATIONS", "Mutation", "markdown"]


@dataclass(frozen=True)
class Mutation:
    id: str
    claim: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


SSL_TESTS = "tests/modes/ssl/test_ssl.py"
CLIP_TESTS = "tests/modes/clip/test_clip.py"
VISION_TESTS = "tests/modes/ssl/test_vision_eval.py"
DATA_TESTS = "tests/modes/test_data_checks.py"
SHARDED_TESTS = "tests/modes/test_sharded_eval.py"


def _ssl(name: str) -> str:
    return f"{SSL_TESTS}::{name}"


def _clip(name: str) -> str:
    return f"{CLIP_TESTS}::{name}"


def _sharded(name: str) -> str:
    return f"{SHARDED_TESTS}::{name}"


MUTATIONS: list[Mutation] = [
    # -- ssl --------------------------------------------------------------------------------------------------------
    Mutation(
        "ema-never-updates",
        "the EMA teacher follows the student after every optimizer step",
        "matrix_llm/modes/ssl/objective.py",
        "features.unwrap(model if model is not None else self.trainer.model).update_teacher(momentum)",
        "features.unwrap(model if model is not None else self.trainer.model)",
        (_ssl("test_the_teacher_is_the_ema_of_the_student_with_the_logged_cosine_momenta"),),
    ),
    Mutation(
        "ema-momentum-not-scheduled",
        "the teacher momentum rises from `teacher_momentum` to 1 on a cosine",
        "matrix_llm/modes/ssl/objective.py",
        "momentum = cosine_momentum(state.global_step, state.max_steps, self.base)",
        "momentum = self.base",
        (_ssl("test_the_teacher_is_the_ema_of_the_student_with_the_logged_cosine_momenta"),),
    ),
    Mutation(
        "teacher-statistics-not-copied",
        "the teacher's BatchNorm statistics are the student's",
        "matrix_llm/models/ssl.py",
        "                t.copy_(s)",
        "                pass",
        (_ssl("test_the_teacher_is_the_ema_of_the_student_with_the_logged_cosine_momenta"),),
    ),
    Mutation(
        "targets-from-the-student",
        "the targets p1, p2 are the EMA teacher's projections",
        "matrix_llm/models/ssl.py",
        "p = self.teacher_projector(self.pooled(views, self.teacher_backbone))",
        "p = self.projector(self.pooled(views))",
        (_ssl("test_the_targets_come_from_the_teacher_not_the_student"),),
    ),
    Mutation(
        "probe-trains-the-backbone",
        "the online probe sees detached features (labels never train the backbone)",
        "matrix_llm/models/ssl.py",
        "features=h[:n].detach())",
        "features=h[:n])",
        (_ssl("test_the_online_probe_never_trains_the_backbone"),),
    ),
    Mutation(
        "mae-probe-trains-the-encoder",
        "M-MAE's online probe sees detached features",
        "matrix_llm/models/ssl.py",
        "self.probe(features.detach())",
        "self.probe(features)",
        (_ssl("test_the_online_probe_never_trains_the_backbone"),),
    ),
    Mutation(
        "gather-matrix-ssl",
        "the Matrix-SSL loss is computed on the projections of every process",
        "matrix_llm/modes/ssl/methods.py",
        "                order=s.order,\n                gather=True,",
        "                order=s.order,\n                gather=False,",
        (
            _ssl("test_the_command_builds_its_loss_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "gather-mec",
        "MEC is computed on the projections of every process",
        "matrix_llm/modes/ssl/methods.py",
        "MECLoss(eps_sq=s.eps_sq, gather=True)",
        "MECLoss(eps_sq=s.eps_sq, gather=False)",
        (
            _ssl("test_the_command_builds_its_loss_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "gather-simclr",
        "NT-Xent scores against the projections of every process",
        "matrix_llm/modes/ssl/methods.py",
        "NTXentLoss(temperature=s.temperature, gather=True)",
        "NTXentLoss(temperature=s.temperature, gather=False)",
        (
            _ssl("test_the_command_builds_its_loss_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "gather-infonce",
        "CLIP's InfoNCE is over the batch of all processes",
        "matrix_llm/modes/clip/objective.py",
        "            CLIPLoss(),\n            CrossModalEntropyLoss(),",
        "            CLIPLoss(gather=False),\n            CrossModalEntropyLoss(),",
        (
            _clip("test_the_command_builds_its_contrastive_and_mce_losses_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "gather-clip-mce",
        "the image-text covariance MCE is computed on the features of every process",
        "matrix_llm/modes/clip/objective.py",
        "CrossModalMCELoss(mu=mce_mu),",
        "CrossModalMCELoss(mu=mce_mu, gather=False),",
        (
            _clip("test_the_command_builds_its_contrastive_and_mce_losses_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "gather-tcr",
        "M-MAE's TCR is computed on the class tokens of every process",
        "matrix_llm/modes/ssl/methods.py",
        "weight=s.tcr_weight, gather=True,",
        "weight=s.tcr_weight, gather=False,",
        (
            _ssl("test_the_command_builds_its_loss_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "preset-official-runs-exact",
        "`ssl_preset: official` runs the original code's Taylor-log loss",
        "matrix_llm/modes/ssl/methods.py",
        "                preset=s.preset,",
        '                preset="exact",',
        (_ssl("test_each_ssl_setting_reaches_the_loss_the_command_builds"),),
    ),
    Mutation(
        "temperature-not-reaching-nt-xent",
        "`ssl_temperature` is NT-Xent's temperature",
        "matrix_llm/modes/ssl/methods.py",
        "NTXentLoss(temperature=s.temperature, gather=True)",
        "NTXentLoss(gather=True)",
        (_ssl("test_each_ssl_setting_reaches_the_loss_the_command_builds"),),
    ),
    Mutation(
        "gamma-not-reaching-the-loss",
        "`ssl_gamma` weights the matrix alignment",
        "matrix_llm/modes/ssl/methods.py",
        "                gamma=s.gamma,",
        "                gamma=1.0,",
        (_ssl("test_each_ssl_setting_reaches_the_loss_the_command_builds"),),
    ),
    Mutation(
        "order-not-reaching-the-loss",
        "`ssl_order` is the official preset's Taylor order",
        "matrix_llm/modes/ssl/methods.py",
        "                order=s.order,",
        "                order=4,",
        (_ssl("test_the_taylor_order_reaches_the_official_preset"),),
    ),
    Mutation(
        "tcr-mu-ignored",
        "`ssl_tcr_mu` sets the TCR shift d / ssl_tcr_mu",
        "matrix_llm/modes/ssl/objective.py",
        "self.loss.mu = out.features.shape[-1] / self.tcr_mu",
        "self.loss.mu = out.features.shape[-1] / 3.0",
        (_ssl("test_each_ssl_setting_reaches_the_loss_the_command_builds"),),
    ),
    Mutation(
        "crop-min-scale-not-reaching-the-views",
        "`crop_min_scale` sets the crops of the views the command builds",
        "matrix_llm/modes/ssl/command.py",
        "crop = dict(crop_scale=(data_args.crop_min_scale, 1.0))",
        "crop = dict()",
        (_ssl("test_the_views_the_command_builds_follow_crop_min_scale_and_jitter_strength"),),
    ),
    Mutation(
        "jitter-strength-not-reaching-the-views",
        "`jitter_strength` scales the colour jitter of the views",
        "matrix_llm/modes/ssl/command.py",
        "crop_min_scale=data_args.crop_min_scale, jitter_strength=data_args.jitter_strength)",
        "crop_min_scale=data_args.crop_min_scale)",
        (_ssl("test_the_views_the_command_builds_follow_crop_min_scale_and_jitter_strength"),),
    ),
    Mutation(
        "gather-barlow-twins",
        "Barlow Twins standardises and correlates over the batch of every process",
        "matrix_llm/modes/ssl/methods.py",
        "BarlowTwinsLoss(lamb=s.barlow_lambda, gather=True)",
        "BarlowTwinsLoss(lamb=s.barlow_lambda, gather=False)",
        (
            _ssl("test_the_command_builds_its_loss_over_every_process"),
            "tests/distributed/test_distributed.py::test_the_objectives_the_commands_build_give_the_single_process_gradient",
        ),
    ),
    Mutation(
        "barlow-lambda-not-reaching-the-loss",
        "`ssl_barlow_lambda` weights Barlow Twins' off-diagonal term",
        "matrix_llm/modes/ssl/methods.py",
        "BarlowTwinsLoss(lamb=s.barlow_lambda, gather=True)",
        "BarlowTwinsLoss(gather=True)",
        (_ssl("test_each_ssl_setting_reaches_the_loss_the_command_builds"),),
    ),
    Mutation(
        "barlow-twins-off-diagonal-unweighted",
        "Barlow Twins' loss is on-diagonal + λ off-diagonal (the paper's)",
        "matrix_llm/losses/contrastive.py",
        "            total = on + self.lamb * off",
        "            total = on + off",
        (
            "tests/losses/test_losses_contrastive_mec.py::test_barlow_twins_equals_the_papers_formula_and_is_zero_at_decorrelated_identical_views",
        ),
    ),
    Mutation(
        "a-method-without-teacher-gets-one",
        "the methods table alone decides the EMA teacher",
        "matrix_llm/modes/ssl/command.py",
        "            teacher=spec.teacher,",
        "            teacher=True,",
        (_ssl("test_the_network_the_command_builds_is_the_methods_row"),),
    ),
    Mutation(
        "a-setting-missing-from-the-card",
        "every setting a mode's config adds (ssl_order, clip_matrix_start_step, ...) is on its model card",
        "matrix_llm/config.py",
        "return {name: getattr(self, name) for name in self.mode_fields()}",
        "return {name: getattr(self, name) for name in self.mode_fields()[:-1]}",
        ("tests/test_cards.py::test_every_setting_that_changes_training_is_on_the_model_card",),
    ),
    Mutation(
        "a-setting-not-reaching-the-objective",
        "every field a mode's config adds is an argument of its objective (one name per setting)",
        "matrix_llm/config.py",
        "fields = {name: name[len(cls.field_prefix) :] for name in cls.mode_fields()}",
        "fields = {name: name[len(cls.field_prefix) :] for name in cls.mode_fields()[1:]}",
        ("tests/test_cards.py::test_each_setting_is_an_argument_of_its_objective_by_its_name",),
    ),
    Mutation(
        "data-settings-missing-from-the-card",
        "the model card lists every data setting of the run (crop_min_scale, label_fraction, ...)",
        "matrix_llm/hub.py",
        "    if data_args is not None:",
        "    if False:",
        (
            "tests/test_cards.py::test_every_data_setting_of_a_run_is_on_its_model_card",
            "tests/modes/classify/test_classification.py::test_classify_command_trains_on_digits_and_writes_the_run",
        ),
    ),
    Mutation(
        "the-run-tail-drops-the-data-settings",
        "a run's model card lists its data settings",
        "matrix_llm/runner.py",
        "            data_args=mode.data_args,",
        "            data_args=None,",
        (
            "tests/modes/classify/test_classification.py::test_classify_command_trains_on_digits_and_writes_the_run",
        ),
    ),
    Mutation(
        "objective-built-twice",
        "a run builds its objective once, and the trainer trains that one",
        "matrix_llm/modes/ssl/command.py",
        "            objective=objective,",
        "            objective=None,",
        (_ssl("test_the_objective_is_built_once_and_is_the_one_the_trainer_trains"),),
    ),
    Mutation(
        "data-bound-differs",
        "every mode's max_train_samples / max_eval_samples share one bound (>= 2)",
        "matrix_llm/config.py",
        "            if value is not None and value < 2:",
        "            if value is not None and value < 1:",
        ("tests/test_cards.py::test_the_data_fields_of_every_mode_share_one_bound",),
    ),
    Mutation(
        "demo-trains-any-data",
        "`matrix-llm demo` refuses data it cannot evaluate, before anything loads",
        "matrix_llm/tools/demo.py",
        "            if self.data_args.is_synthetic:",
        "            if True:",
        ("tests/tools/test_demo.py::test_demo_refuses_data_it_cannot_evaluate",),
    ),
    Mutation(
        "package-face-broken",
        "`from matrix_llm import MatrixTrainer` works (the package's lazy public face)",
        "matrix_llm/__init__.py",
        '    "MatrixTrainer": "matrix_llm.trainer",',
        '    "MatrixTrainer": "matrix_llm.runner",',
        ("tests/test_layering.py::test_the_package_face_is_lazy_and_names_the_public_classes",),
    ),
    Mutation(
        "the-run-keeps-its-model",
        "a run lets go of its model (what build kept on the mode) before the process group ends",
        "matrix_llm/runner.py",
        "            delattr(mode, name)",
        "            pass",
        (_clip("test_the_run_lets_go_of_its_model_before_the_process_group_ends"),),
    ),
    Mutation(
        "renamed-field-ignored",
        "an old field name (teacher_momentum) still sets its renamed field, with a deprecation warning",
        "matrix_llm/parsing/__init__.py",
        "            key = _new_name(str(key), renamed, prog)",
        "            key = str(key)",
        ("tests/test_cards.py::test_a_renamed_field_keeps_its_old_name_with_a_deprecation_warning",),
    ),
    Mutation(
        "views-not-seeded-per-rank",
        "each process draws its own views (the seed includes the rank)",
        "matrix_llm/data/augment.py",
        "seed = hash((self.seed, rank(), int(step), self.calls))",
        "seed = hash((self.seed, 0, int(step), self.calls))",
        (_ssl("test_each_process_draws_its_own_views"),),
    ),
    Mutation(
        "views-not-seeded-per-step",
        "the views are drawn anew at every step, the same ones on a resumed run",
        "matrix_llm/data/augment.py",
        "seed = hash((self.seed, rank(), int(step), self.calls))",
        "seed = hash((self.seed, rank(), 0, self.calls))",
        (_ssl("test_views_are_seeded_per_step_and_leave_the_global_rng_alone"),),
    ),
    Mutation(
        "ssl-zero3-not-refused",
        "`ssl` refuses ZeRO-3 with an EMA teacher before any model loads",
        "matrix_llm/modes/ssl/command.py",
        "if not (METHODS[self.training_args.ssl_method].teacher and uses_zero3(self.training_args)):",
        "if True:",
        (_ssl("test_zero3_with_a_teacher_is_refused_by_its_own_message_before_any_model_loads"),),
    ),
    Mutation(
        "ssl-baseline-is-the-backbone",
        "`ssl`'s random-init row is a fresh init of the backbone's architecture",
        "matrix_llm/modes/ssl/command.py",
        "fresh = random_init(type(backbone), backbone.config, seed=seed, device=device)",
        "fresh = backbone",
        (_ssl("test_the_end_of_run_baseline_is_a_fresh_random_init_and_pixels_are_raw"),),
    ),
    # -- eval probe / knn ------------------------------------------------------------------------------------------
    Mutation(
        "eval-baseline-is-the-model",
        "`eval probe` / `eval knn` measure a fresh random init beside the model",
        "matrix_llm/modes/ssl/evaluate.py",
        "model = fresh(type(model), model.config, seed=args.seed)",
        "model = model",
        (f"{VISION_TESTS}::test_eval_measures_the_model_and_a_fresh_random_init_of_its_architecture",),
    ),
    Mutation(
        "probe-scored-on-its-training-rows",
        "the linear probe is scored on the held-out rows",
        "matrix_llm/modes/ssl/evaluate.py",
        "return float((probe.predict(test_x) == test_y).mean())",
        "return float((probe.predict(train_x) == train_y).mean())",
        (f"{VISION_TESTS}::test_the_linear_probe_is_scored_on_the_held_out_rows",),
    ),
    Mutation(
        "probe-fitted-on-the-test-rows",
        "the linear probe is fitted on the training rows only",
        "matrix_llm/modes/ssl/evaluate.py",
        "probe.fit(train_x, train_y)",
        "probe.fit(test_x, test_y)",
        (f"{VISION_TESTS}::test_the_linear_probe_is_scored_on_the_held_out_rows",),
    ),
    Mutation(
        "knn-ignores-k",
        "kNN votes with its k nearest neighbours",
        "matrix_llm/modes/ssl/evaluate.py",
        "topk(min(k, len(train)), dim=1)",
        "topk(1, dim=1)",
        (f"{VISION_TESTS}::test_knn_votes_with_its_k_nearest_neighbours",),
    ),
    Mutation(
        "probe-features-mean-pooled",
        "frozen-feature probes read a ViT's class token",
        "matrix_llm/models/ssl.py",
        'return "pooler" if outputs.last_hidden_state.dim() == 4 else "cls"',
        'return "pooler" if outputs.last_hidden_state.dim() == 4 else "mean"',
        (f"{VISION_TESTS}::test_frozen_features_are_the_class_token_of_a_vit",),
    ),
    # -- end-of-run evaluation at scale ----------------------------------------------------------------------------
    Mutation(
        "every-process-encodes-everything",
        "each process encodes only its own shard of the evaluation images",
        "matrix_llm/features/sharded.py",
        "return start, start + base + (rank < extra)",
        "return 0, n",
        (
            _sharded("test_the_shards_cover_the_rows_once_in_order"),
            _sharded("test_two_processes_give_the_numbers_of_one"),
        ),
    ),
    Mutation(
        "caption-owners-not-offset",
        "gathered retrieval captions point at their own image, whatever process encoded it",
        "matrix_llm/modes/clip/evaluate.py",
        "offset = int(counts[: distributed.rank()].sum())",
        "offset = 0",
        (_sharded("test_two_processes_give_the_numbers_of_one"),),
    ),
    Mutation(
        "whole-split-in-one-batch",
        "the end-of-run probes collate at most a batch of images at a time",
        "matrix_llm/modes/ssl/evaluate.py",
        "for batch in shard_batches(rows, batch_size, collator, num_workers=num_workers, desc=desc):",
        "for batch in shard_batches(rows, len(rows), collator, num_workers=num_workers, desc=desc):",
        (_sharded("test_the_end_of_run_probes_never_collate_more_than_a_batch"),),
    ),
    Mutation(
        "raw-pixels-uncapped",
        "the raw-pixel baseline fits on at most `probe_max_train_samples` training images",
        "matrix_llm/modes/ssl/command.py",
        'subset = balanced_subset(train["label"], cap, seed) if cap < len(train) else None',
        "subset = None",
        (
            _sharded("test_the_end_of_run_probes_never_collate_more_than_a_batch"),
            _ssl("test_ssl_command_saves_the_backbone_and_measures_it"),
        ),
    ),
    Mutation(
        "raw-pixel-subset-not-balanced",
        "past the cap the raw-pixel subset is class-balanced",
        "matrix_llm/modes/ssl/evaluate.py",
        'picked = order[np.argsort(turn, kind="stable")[:size]]',
        "picked = order[:size]",
        (_sharded("test_the_raw_pixel_subset_is_class_balanced_seeded_and_all_rows_below_the_cap"),),
    ),
    Mutation(
        "raw-pixels-not-downsampled",
        "raw pixels above 32x32 are area-downsampled",
        "matrix_llm/modes/ssl/evaluate.py",
        "pixels = torch.nn.functional.adaptive_avg_pool2d(pixels, RAW_PIXELS_SIDE)",
        "pass",
        (_sharded("test_raw_pixels_above_32_are_area_downsampled"),),
    ),
    Mutation(
        "torch-probe-not-standardised",
        "the torch linear probe standardises the features as scikit-learn's pipeline does",
        "matrix_llm/modes/ssl/evaluate.py",
        "logits = linear((x[start : start + chunk] - mean) / std)",
        "logits = linear(x[start : start + chunk])",
        (_sharded("test_the_torch_probe_agrees_with_scikit_learn_on_the_same_features"),),
    ),
    Mutation(
        "torch-probe-unregularised",
        "the torch linear probe has scikit-learn's L2 penalty",
        "matrix_llm/modes/ssl/evaluate.py",
        "penalty = linear.weight.square().sum() / (2 * c * n)",
        "penalty = linear.weight.square().sum() * 0",
        (_sharded("test_the_torch_probe_agrees_with_scikit_learn_on_the_same_features"),),
    ),
    Mutation(
        "probe-never-switches-to-torch",
        "above SKLEARN_MAX_ROWS training rows the torch probe is used",
        "matrix_llm/modes/ssl/evaluate.py",
        'return "sklearn" if rows <= SKLEARN_MAX_ROWS else "torch"',
        'return "sklearn"',
        (_sharded("test_the_solver_switches_to_torch_above_the_stated_size"),),
    ),
    Mutation(
        "analyze-batches-miscounted",
        "`analyze` batches are collated as they are used and counted for the progress bar",
        "matrix_llm/tools/analyze.py",
        "return -(-len(self.rows) // self.batch_size)",
        "return len(self.rows) // self.batch_size",
        ("tests/tools/test_analyze.py::test_batches_are_collated_as_they_are_used_and_can_be_read_again",),
    ),
    # -- clip ------------------------------------------------------------------------------------------------------
    Mutation(
        "retrieval-directions-swapped",
        "image->text ranks texts for each image, text->image images for each text",
        "matrix_llm/modes/clip/evaluate.py",
        '(("image_to_text", image_ranks.numpy()), ("text_to_image", text_ranks.numpy()))',
        '(("image_to_text", text_ranks.numpy()), ("text_to_image", image_ranks.numpy()))',
        (_clip("test_retrieval_ranks_images_for_texts_and_texts_for_images"),),
    ),
    Mutation(
        "prompt-mean-not-renormalised",
        "a class embedding is the renormalised mean of its prompts' embeddings",
        "matrix_llm/modes/clip/evaluate.py",
        "out.append(F.normalize(embeds.mean(0), dim=-1).cpu())",
        "out.append(embeds.mean(0).cpu())",
        (_clip("test_a_class_embedding_is_the_renormalised_mean_of_its_prompts"),),
    ),
    Mutation(
        "zeroshot-missing-from-evaluate",
        "zero-shot and retrieval are in evaluate()'s metrics (`metric_for_best_model: eval_zeroshot_top1`)",
        "matrix_llm/modes/clip/evaluate.py",
        "            metrics.update(logs)",
        "            pass",
        (_clip("test_clip_command_trains_saves_and_measures"),),
    ),
    Mutation(
        "identical-captions-not-grouped",
        "identical captions form one group of the alignment",
        "matrix_llm/modes/clip/objective.py",
        "aligned = self.alignment(images, texts[first], labels)",
        "aligned = self.alignment(images, texts, torch.arange(len(texts), device=texts.device))",
        (_clip("test_the_few_classes_regime_trains_the_alignment_on_repeated_captions"),),
    ),
    Mutation(
        "clip-crop-not-reaching-the-objective",
        "`clip_crop_min_scale` sets the training crops",
        "matrix_llm/modes/clip/objective.py",
        "            float(crop_min_scale),",
        "            1.0,",
        (_clip("test_each_clip_setting_reaches_the_objective_the_command_builds"),),
    ),
    Mutation(
        "clip-mce-mu-not-reaching-the-objective",
        "`clip_mce_mu` is the MCE term's covariance shift",
        "matrix_llm/modes/clip/objective.py",
        "CrossModalMCELoss(mu=mce_mu),",
        "CrossModalMCELoss(mu=0.5),",
        (_clip("test_each_clip_setting_reaches_the_objective_the_command_builds"),),
    ),
    Mutation(
        "clip-zero3-not-refused",
        "`clip` refuses ZeRO-3 before any model loads",
        "matrix_llm/modes/clip/command.py",
        "        if not uses_zero3(self.training_args):",
        "        if True:",
        (_clip("test_zero3_is_refused_by_its_own_message_before_any_model_loads"),),
    ),
    # -- classify / analyze ----------------------------------------------------------------------------------------
    Mutation(
        "label-fraction-not-applied",
        "`classify --label_fraction f` trains on that fraction of the labels",
        "matrix_llm/modes/classify/command.py",
        'lambda row, i: {"label": row["label"] if keep[i] else IGNORE_INDEX}, with_indices=True',
        'lambda row, i: {"label": row["label"]}, with_indices=True',
        (
            "tests/modes/classify/test_classification.py::test_the_command_trains_on_the_labelled_fraction_only",
        ),
    ),
    Mutation(
        "diff-erank-against-the-model",
        "`analyze`'s diff_erank is against the architecture at random init",
        "matrix_llm/tools/analyze.py",
        "fresh = random_init(model_class, config, seed=args.seed, dtype=dtype, device=device)",
        "fresh = load_any_model(name, dtype=args.dtype, revision=args.revision, trust_remote_code=args.trust_remote_code)",
        (
            "tests/tools/test_analyze.py::test_diff_erank_is_measured_against_a_fresh_random_init_not_the_model",
        ),
    ),
    Mutation(
        "clip-crops-flip",
        "CLIP's training crops never flip (captions name left and right)",
        "matrix_llm/modes/clip/objective.py",
        "    flip=0.0, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0",
        "    flip=0.5, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0",
        (_clip("test_the_training_crops_never_flip_and_the_temperature_clamp_runs_after_every_step"),),
    ),
    Mutation(
        "temperature-clamp-not-added",
        "`logit_scale` is clamped to [0, log 100] after every optimizer step",
        "matrix_llm/modes/clip/objective.py",
        "        return [LogitScaleClamp()]",
        "        return []",
        (_clip("test_the_training_crops_never_flip_and_the_temperature_clamp_runs_after_every_step"),),
    ),
    Mutation(
        "final-norm-row-before-the-norm",
        "`analyze`'s last row is the last hidden state after the final norm",
        "matrix_llm/features/layers.py",
        "                captured[n] = output",
        "                captured[n] = args[0]",
        (
            "tests/tools/test_analyze.py::test_the_last_row_is_the_last_hidden_state_after_the_final_norm",
            "tests/tools/test_analysis.py::test_layer_table_matches_numpy_on_hidden_states",
        ),
    ),
    Mutation(
        "alignment-gradient-cut",
        "the LM `alignment` term's gradient reaches the logits and the head weight",
        "matrix_llm/losses/token.py",
        "        z = F.softmax(logits.to(dtype), dim=-1) @ w\n",
        "        z = (F.softmax(logits.to(dtype), dim=-1) @ w).detach()\n",
        (
            "tests/losses/test_losses_token.py::test_alignment_at_the_matrix_ssl_shift_is_a_weak_term_and_a_small_shift_strengthens_it",
        ),
    ),
    Mutation(
        "evaluation-moves-the-rng",
        "evaluating during training leaves the run as it is (dropout masks after)",
        "matrix_llm/trainer.py",
        "        with features.random_state_kept(self.args.device):\n            return super().evaluate(",
        "        if True:\n            return super().evaluate(",
        ("tests/test_trainer.py::test_evaluating_every_step_does_not_change_the_training_run",),
    ),
    Mutation(
        "measurements-move-the-rng",
        "a measurement during training (probe, GSM8K, zero-shot) keeps torch's random state",
        "matrix_llm/features/modules.py",
        "        with random_state_kept(device):\n            yield device",
        "        if True:\n            yield device",
        ("tests/features/test_features.py::test_evaluating_restores_the_mode_and_torch_s_random_state",),
    ),
    # -- the one loop, the run tail, sft, data (the first rows of this catalogue, when it was prose) ----------------
    Mutation(
        "matrix-term-times-world-size",
        "the matrix term is the micro-batch mean under multi-process training",
        "matrix_llm/trainer.py",
        "batch_term = out.batch_loss / ga",
        "batch_term = out.batch_loss / ga * self.accelerator.num_processes",
        ("tests/modes/lm/test_sft.py::test_two_ranks_with_accumulation_equal_one_process",),
    ),
    Mutation(
        "trainer-always-scales-for-ga",
        "the matrix term is divided for gradient accumulation only when the "
        "Trainer does not divide the loss itself",
        "matrix_llm/trainer.py",
        '        forced = getattr(self, "loss_is_scaled_for_ga", None)',
        "        return True",
        (
            "tests/test_trainer.py::test_when_the_trainer_divides_the_loss_itself_the_matrix_term_is_still_the_micro_batch_mean",
        ),
    ),
    Mutation(
        "evaluate-skips-an-unlabelled-objective",
        "evaluate() runs the objective for a model without labels",
        "matrix_llm/trainer.py",
        "        if any(inputs.get(name) is not None for name in self.label_names):",
        "        if True:",
        ("tests/test_trainer_protocol.py::test_evaluate_runs_the_objective_for_a_model_without_labels",),
    ),
    Mutation(
        "input-names-dropped",
        "an objective's input names survive `remove_unused_columns`",
        "matrix_llm/trainer.py",
        "            if name not in self._signature_columns:",
        "            if False:",
        ("tests/test_trainer_protocol.py::test_input_names_survive_remove_unused_columns",),
    ),
    Mutation(
        "callback-entry-merged-with-the-step-log",
        "the step's queued metrics go to the Trainer's own log entry",
        "matrix_llm/trainer.py",
        "        if not own:  # a callback's own entry",
        "        if False:  # a callback's own entry",
        (
            "tests/test_metrics_callback.py::test_per_layer_and_pair_metrics_are_logged_and_training_is_unchanged",
        ),
    ),
    Mutation(
        "metrics-callback-eats-the-step-log",
        "the metrics callback leaves the Trainer's own step log in place",
        "matrix_llm/callbacks.py",
        "        control.should_log = pending",
        "        pass",
        (
            "tests/test_metrics_callback.py::test_per_layer_and_pair_metrics_are_logged_and_training_is_unchanged",
        ),
    ),
    Mutation(
        "resume-ignored",
        "`--resume_from_checkpoint` continues the run from its checkpoint",
        "matrix_llm/runner.py",
        "result = trainer.train(resume_from_checkpoint=checkpoint)",
        "result = trainer.train(resume_from_checkpoint=None)",
        (
            "tests/test_runner.py::test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one",
            "tests/modes/lm/test_resume.py::test_resume_matches_uninterrupted_run",
        ),
    ),
    Mutation(
        "ssl-resume-ignored",
        "a killed `ssl` run resumes with its teacher and views",
        "matrix_llm/runner.py",
        "result = trainer.train(resume_from_checkpoint=checkpoint)",
        "result = trainer.train(resume_from_checkpoint=None)",
        (_ssl("test_kill_and_resume_ends_like_an_uninterrupted_run"),),
    ),
    Mutation(
        "sigterm-handler-dropped",
        "SIGTERM saves a checkpoint and exits cleanly",
        "matrix_llm/runner.py",
        "previous = signal.signal(signal.SIGTERM, handler)",
        "previous = signal.getsignal(signal.SIGTERM)",
        (
            "tests/test_runner.py::test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one",
        ),
    ),
    Mutation(
        "finished-run-overwritten",
        "a finished run is not overwritten",
        "matrix_llm/runner.py",
        "elif _holds_finished_run(output_dir) and not training_args.overwrite_output_dir:",
        "elif False:",
        ("tests/test_runner.py::test_a_finished_run_is_not_overwritten",),
    ),
    Mutation(
        "hub-token-pickled",
        "the Hub token never reaches disk",
        "matrix_llm/config.py",
        '        state["hub_token"] = None',
        "        pass",
        ("tests/test_runner.py::test_hub_token_never_reaches_disk",),
    ),
    Mutation(
        "weight-zero-builds-the-matrix-loss",
        "`matrix_loss_weight: 0` is plain CE",
        "matrix_llm/modes/lm/objective.py",
        'if loss_type != "none" and self.weight > 0:',
        'if loss_type != "none":',
        ("tests/test_trainer.py::test_weight_zero_is_plain_ce",),
    ),
    Mutation(
        "packed-rows-use-the-cache",
        "packed rows do not attend to each other (`use_cache=False`)",
        "matrix_llm/modes/lm/objective.py",
        'inputs = {**inputs, "use_cache": False}',
        "inputs = dict(inputs)",
        ("tests/features/test_packing.py::test_matrix_term_of_packed_rows_is_the_mean_of_per_example_terms",),
    ),
    Mutation(
        "packed-segments-ignored",
        "the matrix term of packed rows is the mean of per-example terms",
        "matrix_llm/modes/lm/objective.py",
        "if self.matrix_loss is not None and tokens.segments is not None:",
        "if False:",
        ("tests/features/test_packing.py::test_matrix_term_of_packed_rows_is_the_mean_of_per_example_terms",),
    ),
    Mutation(
        "taylor-order-ignored",
        "the Taylor `order` of the token MCE reaches the series",
        "matrix_llm/losses/token.py",
        "loss = info.mce(a, b, log=self.log, order=self.order, trace_term=True)",
        "loss = info.mce(a, b, log=self.log, order=4, trace_term=True)",
        ("tests/losses/test_losses_token.py::test_taylor_log_option_converges_to_eigh_with_the_order",),
    ),
    Mutation(
        "labels-padded-with-the-pad-id",
        "labels are padded with -100",
        "matrix_llm/data/collator.py",
        "[self._pad(lab, length, IGNORE_INDEX) for lab in labels]",
        "[self._pad(lab, length, self.pad_token_id) for lab in labels]",
        ("tests/data/test_collator.py::test_batch_trains_a_tiny_model",),
    ),
    Mutation(
        "strict-regex-without-the-comma",
        "GSM8K's strict-match filter equals lm-eval's",
        "matrix_llm/data/gsm8k/scoring.py",
        r'"strict": (re.compile(r"#### (\-?[0-9\.\,]+)"), 0),',
        r'"strict": (re.compile(r"#### (\-?[0-9\.]+)"), 0),',
        ("tests/data/test_lm_eval_parity.py::test_filters_equal_lm_eval",),
    ),
    Mutation(
        "fewshot-first-draw-skipped",
        "the few-shot examples are lm-eval's sampler's",
        "matrix_llm/data/gsm8k/prompts.py",
        "return [rnd.sample(range(num_train), k) for _ in range(num_docs)]",
        "return [rnd.sample(range(num_train), k) for _ in range(num_docs + 1)][1:]",
        ("tests/data/test_lm_eval_parity.py::test_fewshot_indices_equal_lm_eval_sampler",),
    ),
    Mutation(
        "adapter-not-loaded-for-eval",
        "`eval gsm8k --adapter` generates with the adapter",
        "matrix_llm/modes/lm/eval_gsm8k.py",
        "        model = PeftModel.from_pretrained(model, adapter)",
        "        pass",
        (
            "tests/modes/lm/test_evaluation.py::test_eval_gsm8k_with_an_adapter_generates_like_the_merged_model",
        ),
    ),
    Mutation(
        "resume-loses-renamed-weights",
        "a killed `clip` run resumes exactly (its ViT weights are saved under transformers' old names)",
        "matrix_llm/trainer.py",
        "        if not renamed:",
        "        if True:",
        (_clip("test_kill_and_resume_ends_like_an_uninterrupted_run"),),
    ),
    Mutation(
        "best-model-loses-renamed-weights",
        "load_best_model_at_end restores a ViT's best checkpoint whole (attention weights included)",
        "matrix_llm/trainer.py",
        "        if not self._load_renamed(self.state.best_model_checkpoint):",
        "        if True:",
        (
            "tests/modes/classify/test_classification.py::test_the_best_checkpoint_of_a_tiny_vit_is_the_model_saved_at_the_end",
        ),
    ),
    Mutation(
        "caption-draw-not-resumable",
        "the caption drawn for an image with several is the same in a resumed run",
        "matrix_llm/data/image_text.py",
        'rng = np.random.default_rng([self.seed, int.from_bytes(batch_key, "little")])',
        "rng = np.random.default_rng()",
        (_clip("test_kill_and_resume_ends_like_an_uninterrupted_run"),),
    ),
    Mutation(
        "ssl-backbone-without-processor",
        "an ssl backbone loads with AutoImageProcessor, giving the inputs its probes used",
        "matrix_llm/modes/ssl/command.py",
        "        self.processor.save_pretrained(folder.backbone)",
        "        pass",
        (
            "tests/modes/test_saved_preprocessing.py::test_an_ssl_backbone_loads_with_the_image_processor_its_probes_used",
        ),
    ),
    Mutation(
        "ssl-eval-not-through-the-saved-processor",
        "an ssl run's probes see what AutoImageProcessor gives from the saved backbone",
        "matrix_llm/modes/ssl/command.py",
        "                processor=self.processor,\n            )\n            results.update(probe_results(",
        "            )\n            results.update(probe_results(",
        (
            "tests/modes/test_saved_preprocessing.py::test_an_ssl_backbone_loads_with_the_image_processor_its_probes_used",
        ),
    ),
    Mutation(
        "clip-saved-without-processor",
        "a clip model loads with AutoProcessor, giving the inputs its evaluation used",
        "matrix_llm/modes/clip/command.py",
        "            processing_class=processor,",
        "            processing_class=tokenizer,",
        (
            "tests/modes/test_saved_preprocessing.py::test_a_clip_model_loads_with_automodel_and_the_autoprocessor_its_evaluation_used",
        ),
    ),
    Mutation(
        "classifier-saved-without-processor",
        "a tiny classifier is saved with the image processor it was evaluated with",
        "matrix_llm/modes/classify/command.py",
        "        return model, collator, processor\n    from transformers import AutoModelForImageClassification",
        "        return model, collator, None\n    from transformers import AutoModelForImageClassification",
        (
            "tests/modes/test_saved_preprocessing.py::test_a_classifier_is_saved_with_the_image_processor_it_was_evaluated_with",
        ),
    ),
    Mutation(
        "unfinished-run-restarted-silently",
        "an output_dir holding the checkpoints of an unfinished run is refused unless resumed or overwritten",
        "matrix_llm/runner.py",
        '    elif (last := resolve_checkpoint("true", str(output_dir))) and not training_args.overwrite_output_dir:',
        "    elif False:",
        (
            "tests/test_runner.py::test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one",
            "tests/tools/test_demo.py::test_demo_stops_on_sigterm_like_every_command_and_resumes",
        ),
    ),
    Mutation(
        "demo-report-counts-resumed-steps",
        "after a resume the demo report says how many steps this process ran",
        "matrix_llm/tools/demo.py",
        '            into["step"] = state.global_step',
        '            into["step"] = 0',
        ("tests/tools/test_demo.py::test_demo_stops_on_sigterm_like_every_command_and_resumes",),
    ),
    Mutation(
        "demo-plan-not-printed",
        "the demo says what it will run and about how long at the start",
        "matrix_llm/tools/demo.py",
        "            sys.stdout.write(_plan(self.data_args, self.training_args, args.eval_size))",
        "            pass",
        ("tests/tools/test_demo.py::test_demo_stops_on_sigterm_like_every_command_and_resumes",),
    ),
    Mutation(
        "over-context-not-counted",
        "prompts that leave too little of the model's context are counted and warned about",
        "matrix_llm/modes/lm/generation.py",
        "    over = [n for n in lengths if n + max_new_tokens > context]",
        "    over = []",
        (
            "tests/modes/lm/test_generation.py::test_prompts_that_leave_too_little_context_are_counted_and_warned_about",
        ),
    ),
    Mutation(
        "retrieval-one-caption-per-image",
        "image -> text retrieval counts a hit when any of the image's captions is in the top k",
        "matrix_llm/modes/clip/evaluate.py",
        "    image_ranks = torch.gather(positive, 1, order).float().argmax(dim=1)",
        "    image_ranks = torch.where(order == torch.arange(len(image_embeds)).view(-1, 1))[1]",
        (_clip("test_retrieval_with_several_captions_per_image_and_ties_is_clip_benchmarks_protocol"),),
    ),
    Mutation(
        "retrieval-ties-unstable",
        "retrieval ties keep the lower index first (a stable sort)",
        "matrix_llm/modes/clip/evaluate.py",
        "    by_text = torch.sort(logits.T, dim=1, descending=True, stable=True).indices",
        "    by_text = logits.shape[0] - 1 - torch.sort(logits.T.flip(1), dim=1, descending=True, stable=True).indices",
        (_clip("test_retrieval_with_several_captions_per_image_and_ties_is_clip_benchmarks_protocol"),),
    ),
    Mutation(
        "retrieval-drops-extra-captions",
        "every caption of a row is encoded for retrieval",
        "matrix_llm/modes/clip/evaluate.py",
        '                for caption in [row["caption"]] if isinstance(row["caption"], str) else row["caption"]:',
        '                for caption in [row["caption"]] if isinstance(row["caption"], str) else row["caption"][:1]:',
        (_clip("test_each_caption_of_a_row_is_encoded_with_its_image"),),
    ),
    Mutation(
        "retrieval-captions-of-skipped-images",
        "an image skip_corrupt_images leaves out of retrieval takes its captions with it",
        "matrix_llm/modes/clip/evaluate.py",
        "            for n, i in enumerate(kept):",
        "            for n, i in enumerate(range(len(chunk))):",
        (_clip("test_each_caption_of_a_row_is_encoded_with_its_image"),),
    ),
    # -- a user's own image data ------------------------------------------------------------------------------------
    Mutation(
        "flat-folder-not-unlabelled",
        "a flat image folder trains `ssl` unlabelled, said once",
        "matrix_llm/modes/ssl/command.py",
        'if e.kind != "label" or label_column != SSLDataArguments.label_column:',
        "if True:",
        (f"{DATA_TESTS}::test_a_flat_image_folder_trains_ssl_unlabelled_said_once",),
    ),
    Mutation(
        "data-path-not-checked",
        "a data folder that does not exist is a configuration problem",
        "matrix_llm/config.py",
        "                if not path.exists():",
        "                if False:",
        (f"{DATA_TESTS}::test_a_missing_or_empty_data_folder_is_a_configuration_problem",),
    ),
    Mutation(
        "first-rows-not-decoded",
        "an unreadable image among the first rows stops the run before any model loads",
        "matrix_llm/data/images.py",
        "    for i in range(min(n, len(rows))):",
        "    for i in range(0):",
        (f"{DATA_TESTS}::test_an_unreadable_image_among_the_first_rows_is_named_before_any_model_loads",),
    ),
    Mutation(
        "data-problem-is-a-traceback",
        "data problems are reported like configuration problems (exit 2, before any model loads)",
        "matrix_llm/runner.py",
        "        except (ValueError, OSError) as e:",
        "        except KeyError as e:",
        (
            f"{DATA_TESTS}::test_a_flat_image_folder_is_refused_where_labels_or_captions_are_needed",
            f"{DATA_TESTS}::test_a_split_the_data_does_not_have_names_the_fields_to_change",
        ),
    ),
    Mutation(
        "unreadable-image-no-checkpoint",
        "an unreadable image met in training stops the run with a checkpoint saved",
        "matrix_llm/runner.py",
        "            trainer._save_checkpoint(trainer.model_wrapped, trial=None)",
        "            pass",
        (f"{DATA_TESTS}::test_an_unreadable_image_met_in_training_stops_with_one_line_and_a_checkpoint",),
    ),
    Mutation(
        "skip-corrupt-ignored",
        "`skip_corrupt_images` skips and counts an unreadable image",
        "matrix_llm/modes/ssl/command.py",
        "        skip_corrupt=data_args.skip_corrupt_images,",
        "        skip_corrupt=False,",
        (f"{DATA_TESTS}::test_an_unreadable_image_met_in_training_stops_with_one_line_and_a_checkpoint",),
    ),
    Mutation(
        "help-imports-the-stack",
        "a training command's --help imports neither torch nor transformers",
        "matrix_llm/cli.py",
        'if name in TRAINING_COMMANDS and rest in (["-h"], ["--help"]) and cached.is_file():',
        "if False:",
        ("tests/test_cli.py::test_help_imports_nothing_heavy_and_lists_the_everyday_training_fields",),
    ),
    Mutation(
        "help-without-everyday-fields",
        "the short help lists the everyday TrainingArguments (max_steps, save_steps, ...)",
        "matrix_llm/parsing/usage.py",
        "    if everyday:",
        "    if False:",
        ("tests/test_cli.py::test_the_packaged_help_is_what_the_configuration_classes_give",),
    ),
    Mutation(
        "tool-model-not-checked",
        "a tool's --model that is a missing local folder is named as such, before anything loads",
        "matrix_llm/parsing/usage.py",
        "    if looks_like_path(value) and not Path(value).expanduser().is_dir():",
        "    if False:",
        ("tests/test_cli.py::test_a_tool_names_a_missing_model_folder_and_a_misspelt_option",),
    ),
    Mutation(
        "org-folder-read-as-hub-id",
        "`outputs/run` where `outputs/` is a local folder is a path, not a Hub id",
        "matrix_llm/parsing/__init__.py",
        '    return name.count("/") == 1 and Path(name).parent.is_dir()',
        "    return False",
        ("tests/test_cli.py::test_a_tool_names_a_missing_model_folder_and_a_misspelt_option",),
    ),
    Mutation(
        "tool-option-no-suggestion",
        "a misspelt option of a tool is answered with the one it resembles",
        "matrix_llm/parsing/usage.py",
        '            if name.startswith("--") and not any(option.startswith(name) for option in known):',
        "            if False:",
        (
            "tests/test_cli.py::test_a_tool_names_a_missing_model_folder_and_a_misspelt_option",
            "tests/test_cli.py::test_analyze_lmc_names_a_missing_folder_and_a_misspelt_option",
        ),
    ),
    Mutation(
        "compare-output-named-after-one",
        "`analyze --compare` writes to a folder named after the pair",
        "matrix_llm/tools/analyze.py",
        '    return f"{a.name}_vs_{b.name}"',
        "    return a.name",
        ("tests/test_cli.py::test_analyze_compare_writes_to_a_folder_named_after_the_pair",),
    ),
    Mutation(
        "license-table-warns",
        "installing the package prints no setuptools deprecation warnings",
        "pyproject.toml",
        'license = "Apache-2.0"',
        'license = { text = "Apache-2.0" }',
        ("tests/test_packaging.py::test_wheel_ships_the_demo_recipes_and_they_resolve_outside_the_checkout",),
    ),
    Mutation(
        "readme-commands-collide",
        "the README's Use block runs top to bottom as written",
        "README.md",
        "    --label_fraction 0.05 --output_dir outputs/classify-mir",
        "    --label_fraction 0.05",
        ("tests/test_readme.py::test_the_use_block_runs_top_to_bottom_as_written",),
    ),
    Mutation(
        "recipes-not-packaged",
        "the wheel ships the recipes",
        "pyproject.toml",
        'matrix_llm = ["recipes/**/*.yaml", "help/*.txt"]',
        "",
        ("tests/test_packaging.py::test_wheel_ships_the_demo_recipes_and_they_resolve_outside_the_checkout",),
    ),
]


def markdown() -> str:
    """The table of tests/mutations/README.md: one row per mutation."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    rows = [
        "| id | claim | break (in the file, replace the first text with the second) | fails |",
        "|---|---|---|---|",
    ]
    for m in MUTATIONS:
        tests = "<br>".join(f"`{t}`" for t in m.tests)
        rows.append(
            f"| `{m.id}` | {cell(m.claim)} | `{m.file}`: `{cell(m.old)}` -> `{cell(m.new) or '(nothing)'}` "
            f"| {tests} |"
        )
    return "\n".join(rows)
