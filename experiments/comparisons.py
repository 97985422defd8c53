"""The studies' comparisons (issue 31, item 1): one arm against a baseline as a researcher reads it
(:func:`compare`: effect, 95 % CI, n, the test and why, p Bonferroni-corrected, the minimum detectable effect, the
verdict beside the claimed effect), a contrast of several arms reported the same way (:func:`contrast`, e.g. an
interaction), its one-line text (:func:`comparison_text`), Spearman's rank correlation with a bootstrap CI
(:func:`rank_correlation`), and an SSL study's registered probe comparisons with its regime check against raw pixels
(:func:`probe_comparisons`). Tested against scipy in tests/test_experiments.py.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "UNPAIRED",
    "compare",
    "comparison_text",
    "contrast",
    "probe_comparisons",
    "rank_correlation",
]

# why the studies compare arms unpaired: a seed fixes both arms' initialisation and data order, but their runs
# diverge (float32 round-off alone moves single seeds of clip_few_classes by up to 0.17)
UNPAIRED = "seeds share the initialisation and data order, but the runs diverge: they do not pair the noise"


def compare(
    values: Sequence[float],
    baseline: Sequence[float],
    *,
    paired: bool,
    reason: str,
    comparisons: int = 1,
    claimed: float | None = None,
) -> dict[str, Any]:
    """One arm against the baseline, as a researcher reads it: the effect (mean difference), its 95 % CI, n, the
    test, the two-sided p and p Bonferroni-corrected over ``comparisons`` arms, the minimum detectable effect at
    80 % power (two-sided, at the corrected level), and the verdict beside the seed's ``claimed`` effect.

    ``paired``: a paired t test on per-seed differences, only where a seed pairs the noise of both arms (``reason``
    says how: the same initialisation, data order and batches); otherwise Welch's t (unequal variances) and an exact
    permutation test of the mean difference (every split of the pooled values; 20,000 seeded draws beyond 20
    values). The verdict: ``reproduced`` / ``contradicted`` when the corrected p < 0.05 (by the effect's sign
    against the claim's; unpaired: the larger of Welch's and the permutation p, which with 3 + 3 values
    cannot go below 0.1), ``not testable at this scale`` when the claimed effect is below the minimum detectable
    one, ``not reproduced`` when the CI excludes the claimed effect, else ``inconclusive``.
    """
    a, b = [float(x) for x in values], [float(x) for x in baseline]
    if paired:
        if len(a) != len(b):
            raise ValueError(f"compare: paired arms need the same seeds; got {len(a)} and {len(b)} values")
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        n, effect = len(diffs), statistics.fmean(diffs)
        se = statistics.stdev(diffs) / n**0.5 if n > 1 else float("nan")
        return _tested(effect, se, n - 1, n, "paired t", reason, None, comparisons, claimed)
    effect, se, df = _welch([a, b], [1.0, -1.0])
    p_perm = _permutation_p(a, b)
    return _tested(effect, se, df, min(len(a), len(b)), "Welch t", reason, p_perm, comparisons, claimed)


def probe_comparisons(
    probe: Mapping[str, Sequence[float]],
    registered: Sequence[tuple[str, str, float | None]],
    pixels: Sequence[float],
    check: str = "simclr",
) -> dict[str, Any]:
    """An SSL study's registered comparisons of the per-seed linear probes ``probe[arm]``: each ``(arm, baseline,
    claimed effect or None)`` unpaired, Bonferroni over them (``registered``, by ``"arm - baseline"``); the regime
    check, the ``check`` arm's probe against the raw-pixel probe of the same runs (``regime``); and the arms whose
    mean probe is above the pixels' (``above_pixels``)."""
    tested = {
        f"{arm} - {baseline}": compare(
            probe[arm],
            probe[baseline],
            paired=False,
            reason=UNPAIRED,
            comparisons=len(registered),
            claimed=claim,
        )
        for arm, baseline, claim in registered
    }
    regime = compare(probe[check], pixels, paired=False, reason="pixels: one value per run", comparisons=1)
    above = [arm for arm, values in probe.items() if statistics.fmean(values) > statistics.fmean(pixels)]
    return {"registered": tested, "regime": regime, "above_pixels": above}


def contrast(
    groups: Sequence[Sequence[float]],
    weights: Sequence[float],
    *,
    reason: str,
    comparisons: int = 1,
    claimed: float | None = None,
) -> dict[str, Any]:
    """A linear contrast of independent groups' means, ``sum(w_i * mean_i)``, as :func:`compare` reports it: e.g.
    an interaction, a regulariser's gain with few labels minus its gain with all (``groups`` = [reg few, CE few,
    reg all, CE all], ``weights`` = [1, -1, -1, 1]). Welch-Satterthwaite t: the standard error from each group's
    own variance, ``se**2 = sum(w_i**2 * var_i / n_i)``, with Satterthwaite's degrees of freedom; n is the
    smallest group's size."""
    values = [[float(x) for x in g] for g in groups]
    effect, se, df = _welch(values, [float(w) for w in weights])
    test = "Welch-Satterthwaite t of the contrast"
    return _tested(effect, se, df, min(map(len, values)), test, reason, None, comparisons, claimed)


def _welch(groups: Sequence[Sequence[float]], weights: Sequence[float]) -> tuple[float, float, float]:
    """``(effect, se, df)`` of ``sum(w_i * mean_i)`` over independent groups (Satterthwaite's df; with no spread
    at all the df of the pooled groups, which then only scales a zero standard error)."""
    if len(groups) != len(weights):
        raise ValueError(f"contrast: {len(groups)} groups, {len(weights)} weights")
    if any(len(g) < 2 for g in groups):
        raise ValueError("contrast: each group needs two values or more (its variance)")
    effect = sum(w * statistics.fmean(g) for g, w in zip(groups, weights, strict=True))
    parts = [w * w * statistics.variance(g) / len(g) for g, w in zip(groups, weights, strict=True)]
    se = sum(parts) ** 0.5
    pooled = sum(len(g) - 1 for g in groups)
    df = se**4 / sum(v * v / (len(g) - 1) for v, g in zip(parts, groups, strict=True)) if se > 0 else pooled
    return effect, se, df


def _tested(
    effect: float,
    se: float,
    df: float,
    n: int,
    test: str,
    reason: str,
    p_perm: float | None,
    comparisons: int,
    claimed: float | None,
) -> dict[str, Any]:
    """:func:`compare`'s result from an effect, its standard error and degrees of freedom (its docstring)."""
    from scipy import stats

    alpha = 0.05 / comparisons
    t = effect / se if se > 0 else (0.0 if effect == 0 else math.copysign(math.inf, effect))
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.975, df)) * se
    mde = float(stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(0.8, df)) * se
    p_corrected = min(1.0, comparisons * (p if p_perm is None else max(p, p_perm)))
    if p_corrected < 0.05 and claimed is not None:
        verdict = "reproduced" if effect * claimed > 0 else "contradicted"
    elif p_corrected < 0.05:
        verdict = "an effect"
    elif claimed is not None and abs(claimed) < mde:
        verdict = "not testable at this scale"
    elif claimed is not None and not (effect - half <= claimed <= effect + half):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return {
        "effect": effect,
        "ci95": [effect - half, effect + half],
        "n": n,
        "test": test,
        "reason": reason,
        "p": p,
        "p_permutation": p_perm,
        "p_corrected": p_corrected,
        "comparisons": comparisons,
        "mde80": mde,
        "claimed": claimed,
        "verdict": verdict,
    }


def _permutation_p(a: Sequence[float], b: Sequence[float], draws: int = 20_000) -> float:
    """Two-sided p of the difference of means under exchangeability of the pooled values: twice the smaller
    one-sided share of splits at least as extreme (scipy's ``permutation_test`` convention)."""
    import itertools
    import random

    pooled, k = [*a, *b], len(a)
    total = sum(pooled)

    def diff(first: Sequence[float]) -> float:
        s = sum(first)
        return s / k - (total - s) / (len(pooled) - k)

    observed = diff(a)
    if len(pooled) <= 20:
        splits = [[pooled[i] for i in idx] for idx in itertools.combinations(range(len(pooled)), k)]
    else:
        rng = random.Random(0)
        splits = [rng.sample(pooled, k) for _ in range(draws)]
    diffs = [diff(first) for first in splits]
    upper = sum(d >= observed - 1e-12 for d in diffs) / len(diffs)
    lower = sum(d <= observed + 1e-12 for d in diffs) / len(diffs)
    return min(1.0, 2 * min(upper, lower))


def rank_correlation(xs: Sequence[float], ys: Sequence[float], draws: int = 2000) -> dict[str, Any]:
    """Spearman's rank correlation of paired values, with a 95 % percentile bootstrap CI over the pairs (seeded;
    resamples with fewer than two distinct x or y are skipped; ``draws=0``: the correlation alone, CI NaN) and n;
    NaN for a constant ``ys``."""
    import random

    from scipy.stats import spearmanr

    pairs = list(zip([float(x) for x in xs], [float(y) for y in ys], strict=True))
    undefined = {"rho": math.nan, "ci95": [math.nan, math.nan], "n": len(pairs)}
    if len({y for _, y in pairs}) < 2:  # a constant metric has no rank correlation
        return undefined
    rho = float(spearmanr(*zip(*pairs, strict=True)).statistic)
    rng, boot = random.Random(0), []
    for _ in range(draws):
        sample = [rng.choice(pairs) for _ in pairs]
        if len({x for x, _ in sample}) > 1 and len({y for _, y in sample}) > 1:
            boot.append(float(spearmanr(*zip(*sample, strict=True)).statistic))
    if not boot:
        return undefined if draws else {**undefined, "rho": rho}
    boot.sort()
    low, high = boot[int(0.025 * (len(boot) - 1))], boot[int(0.975 * (len(boot) - 1))]
    return {"rho": rho, "ci95": [low, high], "n": len(pairs)}


def comparison_text(c: Mapping[str, Any]) -> str:
    """One line of :func:`compare`'s result: effect [CI], test, p (corrected), MDE, claim, verdict."""
    p = f"p = {c['p']:.2f}" + (
        f", permutation p = {c['p_permutation']:.2f}" if c["p_permutation"] is not None else ""
    )
    corrected = (
        f", {c['p_corrected']:.2f} corrected for {c['comparisons']} arms" if c["comparisons"] > 1 else ""
    )
    claimed = f"; claimed {c['claimed']:+.3f}" if c["claimed"] is not None else ""
    return (
        f"{c['effect']:+.3f} [95 % CI {c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], n = {c['n']}, {c['test']} "
        f"({c['reason']}), {p}{corrected}; minimum detectable effect (80 % power) {c['mde80']:.3f}{claimed}: "
        f"{c['verdict']}"
    )
