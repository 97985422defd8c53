"""`matrix-llm ssl`: step time of each method on the same backbone and batch, and the throughput of the batched
two-view augmentation against a per-sample Pillow pipeline, same process, interleaved.

1. Step time: one optimizer step (two augmented views, student and teacher forwards, loss, backward, AdamW) of
   :class:`SSLModel` + :class:`SSLObjective` for Matrix-SSL `exact`, Matrix-SSL `official`, MEC and SimCLR on a
   random-init ViT; ratios to SimCLR's step. Two shapes: batch below the projection size (the matrix terms take
   the batch side, `info.feature_uniformity` / `feature_mce`) and batch above it.
2. Augmentation: images/s of :class:`TwoViewAugment` (plain torch, batched) vs the same two views made one image at a
   time with Pillow (crop-resize, flip, brightness / contrast / saturation / hue jitter, grayscale, Gaussian blur,
   solarize, then to a normalised tensor): the `set_transform` approach of torchvision-style pipelines.

Run:   .venv/bin/python bench/ssl_step.py            (a couple of minutes on 2 cores)
       .venv/bin/python bench/ssl_step.py --write    (also write the section of BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks_md import interleaved_medians, write_section  # noqa: E402

from matrix_llm.data.augment import VIEW_2, TwoViewAugment, ViewSettings  # noqa: E402
from matrix_llm.models.ssl import SSLModel  # noqa: E402
from matrix_llm.models.tiny import build_image_backbone  # noqa: E402
from matrix_llm.modes import SSLObjective  # noqa: E402

SECTION = "## Self-supervised step time and augmentation throughput"
METHODS = (("matrix_ssl", "exact"), ("matrix_ssl", "official"), ("mec", "exact"), ("simclr", "exact"))


def _setup(method: str, preset: str, batch: int, proj: int):
    backbone = build_image_backbone("tiny-vit", image_size=32, num_channels=3, hidden_size=128, num_layers=4)
    model = SSLModel(
        backbone,
        TwoViewAugment(size=32, channels=3),
        projector_hidden=512,
        projector_dim=proj,
        predictor_hidden=128 if method != "simclr" else 0,
        teacher=method != "simclr",
    )
    objective = SSLObjective(method=method, preset=preset, metrics_steps=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, objective, optimizer, images


def step_times(batch: int, proj: int, steps: int, repeats: int) -> dict[str, float]:
    def stepper(method: str, preset: str):
        model, objective, optimizer, images = _setup(method, preset, batch, proj)

        def step(i: int) -> None:
            loss = objective(model, {"pixel_values": images}, step=i).batch_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.update_teacher(0.99)

        return step

    steppers = {f"{m} {p}" if m == "matrix_ssl" else m: stepper(m, p) for m, p in METHODS}
    return interleaved_medians(steppers, rounds=repeats, calls=steps)


def loss_times(batch: int, proj: int, repeats: int, calls: int = 20) -> dict[str, float]:
    """Forward + backward of the loss alone on random projections (no network): what the method itself costs."""
    from matrix_llm.losses import MatrixSSLLoss, MECLoss, NTXentLoss

    g = torch.Generator().manual_seed(0)
    z1, z2, p1, p2 = (torch.randn(batch, proj, generator=g) for _ in range(4))
    losses = {
        "matrix_ssl exact": lambda a, b: MatrixSSLLoss(preset="exact")(a, b, p1, p2).total,
        "matrix_ssl official": lambda a, b: MatrixSSLLoss(preset="official", check=False)(a, b, p1, p2).total,
        "mec": lambda a, b: MECLoss()(a, b, p1, p2).total,
        "simclr": lambda a, b: NTXentLoss()(a, b).total,
    }

    def caller(fn):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        return lambda i: fn(a, b).backward()

    return interleaved_medians({name: caller(fn) for name, fn in losses.items()}, rounds=repeats, calls=calls)


def _pil_view(image, view: ViewSettings, size: int, rng: random.Random) -> np.ndarray:
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    w, h = image.size
    for _ in range(10):  # RandomResizedCrop's area / aspect draw
        area = w * h * rng.uniform(*view.crop_scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:
        x, y, cw, ch = 0, 0, w, h
    image = image.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < view.flip:
        image = ImageOps.mirror(image)
    if rng.random() < view.jitter:
        for enhance, amount in (
            (ImageEnhance.Brightness, view.brightness),
            (ImageEnhance.Contrast, view.contrast),
            (ImageEnhance.Color, view.saturation),
        ):
            image = enhance(image).enhance(rng.uniform(1 - amount, 1 + amount))
        hsv = np.array(image.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-view.hue, view.hue) * 255)) % 256
        image = Image.fromarray(hsv, "HSV").convert("RGB")
    if rng.random() < view.grayscale:
        image = image.convert("L").convert("RGB")
    if rng.random() < view.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0) * size / 224))
    if rng.random() < view.solarize:
        image = ImageOps.solarize(image, 128)
    return (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5


def augmentation_throughput(n: int, size: int, repeats: int) -> tuple[float, float]:
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    pil = [Image.fromarray(a) for a in arrays]
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0
    augment = TwoViewAugment(size=size, channels=3)
    batched_s, pil_s = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        augment(batch, step=r)
        t1 = time.perf_counter()
        draw = random.Random(r)
        views = [[_pil_view(im, v, size, draw) for im in pil] for v in (ViewSettings(), VIEW_2)]
        torch.from_numpy(np.stack(views[0])).permute(0, 3, 1, 2)
        torch.from_numpy(np.stack(views[1])).permute(0, 3, 1, 2)
        t2 = time.perf_counter()
        if r:
            batched_s.append(t1 - t0)
            pil_s.append(t2 - t1)
    return n / statistics.median(batched_s), n / statistics.median(pil_s)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lines = [
        "| batch | projection dim | "
        + " | ".join(
            f"{n} ms (x SimCLR)" for n in ("matrix_ssl exact", "matrix_ssl official", "mec", "simclr")
        )
        + " |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    loss_lines = [lines[0].replace(" ms (x SimCLR)", " loss ms (x SimCLR)"), lines[1]]
    for batch, proj in ((64, 256), (256, 128)):
        for table, t, unit in (
            (lines, step_times(batch, proj, args.steps, args.repeats), 1e3),
            (loss_lines, loss_times(batch, proj, args.repeats), 1e3),
        ):
            base = t["simclr"]
            table.append(
                f"| {batch} | {proj} | "
                + " | ".join(f"{unit * v:.1f} ({v / base:.2f}x)" for v in t.values())
                + " |"
            )
            print(table[-1], flush=True)
    aug = [
        "| images | side | batched (torch) img/s | Pillow per image img/s | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, size in ((512, 32), (256, 96)):
        k, p = augmentation_throughput(n, size, args.repeats)
        aug.append(f"| {n} | {size} | {k:.0f} | {p:.0f} | {k / p:.1f}x |")
        print(aug[-1], flush=True)
    text = "\n".join(
        [
            SECTION,
            "",
            (
                f"Written by `bench/ssl_step.py` on {started} UTC ({platform.machine()}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads). One optimizer step of SSLModel + SSLObjective (random-init ViT, hidden "
                "128, 4 layers, 32 x 32 RGB, projector 512, two views, student + EMA teacher, AdamW), median over "
                "interleaved repeats after a warm-up; ratios to SimCLR's step. Target: `exact` <= 1.2x SimCLR."
            ),
            "",
            *lines,
            "",
            (
                "The losses alone (forward + backward on random projections of the same shapes, no network): the step "
                "ratios above come mostly from the EMA teacher's forward pass and the predictor, which SimCLR does not "
                "have, not from the matrix logarithms."
            ),
            "",
            *loss_lines,
            "",
            (
                "Two-view augmentation (both of BYOL's views) of random RGB images: TwoViewAugment (plain torch, one batched "
                "call) vs the same operations one image at a time with Pillow, converted to normalised tensors. Target: "
                ">= 3x."
            ),
            "",
            *aug,
            "",
            "Command:",
            "",
            "```",
            "python bench/ssl_step.py " + " ".join(argv),
            "```",
            "",
        ]
    )
    if args.write:
        write_section(SECTION, text, REPO / "BENCHMARKS.md")
        print(f"wrote {SECTION!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
