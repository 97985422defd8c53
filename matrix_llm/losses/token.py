"""Matrix cross-entropy on LM token representations (docs/formulations.md).

The original authors never released their LLM code; the three formulations here are matrix_llm's documented
derivations (docs/formulations.md), not the authors' method. Say so wherever results are reported.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import info
from ..distributed import all_gather_no_grad, all_gather_with_grad
from ..info import no_autocast, work_dtype  # the one autocast switch and upcast rule of info/ and losses/
from .base import (
    LossOutput,
    check_finite_and_range,
    check_labels,
    check_matrix,
    detached_parts,
)

__all__ = ["TokenMCELoss"]

FORMULATIONS = ("head", "relation", "alignment")
# (mu, lamb) defaults per formulation; lamb=None means "the same as mu".
_DEFAULTS: dict[str, tuple[float, float | None]] = {
    "head": (1e-2, None),
    "relation": (1e-2, 0.0),
    "alignment": (0.5, None),
}


def _trace_normalise(k: Tensor) -> Tensor:
    return k / k.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]


class TokenMCELoss(nn.Module):
    r"""Matrix cross-entropy between a target and a predicted matrix built from completion tokens.

    ``MCE(A, B) = -tr(A log B) + tr(B)`` (:func:`matrix_llm.info.mce`) with a detached target ``A`` and a
    predicted ``B`` that carries the gradient, over the ``T`` completion tokens of the (micro-)batch:

    - ``"head"`` (default, docs/formulations.md; ``T x T``): ``A = (Ŵ Ŵᵀ + λI)/tr``, ``B = (Ĥ Ĥᵀ + μI)/tr``, where
      ``Ŵ`` are the row-normalised LM-head rows of the target tokens ``W[y_t]`` (detached) and ``Ĥ`` the
      row-normalised hidden states. Minimum ``-tr(A log A) + 1`` at ``h_t ∝ W[y_t]`` (neural collapse).
    - ``"relation"`` (docs/formulations.md; ``T x T``): ``A = (K_Y + λI)/tr`` with ``K_Y = Y Yᵀ`` the same-target-token
      indicator (the Gram of the one-hot targets), ``B = (K_P + μI)/tr`` with ``K_P`` the cosine Gram of
      ``softmax(logits)`` (``gram="raw"``: ``P Pᵀ``). Gradient reaches the logits.
    - ``"alignment"`` (docs/formulations.md; ``d x d``): ``A = C(g) + λI``, ``B = C(z) + μI`` with ``C`` the centred
      covariance of row-normalised rows (:func:`matrix_llm.info.covariance`), ``g_t = W[y_t]`` (detached) and
      ``z_t = Wᵀ softmax(logits_t)`` (gradient reaches the logits and, through ``z``, the head weight). This is
      exactly the Matrix-SSL alignment term with teacher ``g`` and student ``z``; not trace-normalised. With
      ``log="eigh"`` it is computed on the ``T x T`` side (:func:`matrix_llm.info.feature_mce`): the same value
      at ``O(T² d + T³)`` instead of ``O(d³)``.

    Default shifts (``mu`` on the prediction, ``lamb`` on the target; docs/formulations.md requires ``mu > 0`` because
    ``Ĥ Ĥᵀ`` has rank ``<= min(T, d)`` and is singular whenever ``T > d`` or hidden states coincide):

    - ``head``: ``mu = lamb = 1e-2``. Relative to the unit diagonal of the cosine Grams, small enough not to wash
      out their structure, large enough that ``B``'s smallest eigenvalue ``mu / (T (1 + mu))`` stays well
      above float32 round-off of ``eigh`` for ``T`` up to a few thousand. The same shift on both sides keeps
      ``B = A`` attainable (docs/formulations.md).
    - ``relation``: ``mu = 1e-2``, ``lamb = 0`` (docs/formulations.md).
    - ``alignment``: ``mu = lamb = 0.5``, the Matrix-SSL code default. A centred covariance of unit rows has
      eigenvalues in ``[0, 1]``, so ``C + 0.5 I - I`` has spectral radius ``<= 0.5``: ``log="taylor"`` stays well
      inside its convergence region.

    RelationMatch-style ``/T`` scaling of the Grams before the shift (``(K/T + λI)/tr``) equals this module
    with ``lamb`` and ``mu`` multiplied by ``T``, since trace normalisation removes the overall scale.

    Args:
        formulation: ``"head"``, ``"relation"`` or ``"alignment"``.
        mu: shift of the predicted matrix, ``> 0``; ``None``: the formulation's default above.
        lamb: shift of the target matrix, ``>= 0``; ``None``: the formulation's default above.
        log: ``"eigh"`` (exact, Daleckii–Krein backward) or ``"taylor"`` (series of order ``order`` around
            ``I``; raises ``ValueError`` outside its convergence region).
        order: Taylor order for ``log="taylor"``.
        max_tokens: if ``T > max_tokens``, use a random subset of ``max_tokens`` positions (the same positions
            for every input). ``None``: all tokens. Bounds the ``O(T^3)`` eigendecomposition.
        scope: ``"local"`` (this micro-batch on this rank) or ``"global"`` (gather the tokens of all ranks with
            :func:`matrix_llm.distributed.all_gather_with_grad` first; identity on one process). With
            ``"global"`` and ``max_tokens``, pass a ``seed`` so that every rank draws the same subset.
        seed: seed of a private ``torch.Generator`` (created once, advanced on every call) for the token subset;
            ``None`` uses the global RNG. The generator state is not part of ``state_dict``.
        gram: ``"cosine"`` or ``"raw"``: Gram of the predicted distributions for ``"relation"``.
        diagnostics: compute the ``entropy`` / ``erank`` parts (an extra eigendecomposition per call: ``T x T``,
            or ``d x d`` for ``alignment``). Off when the caller computes its own diagnostics on a schedule
            (:class:`~matrix_llm.modes.LMObjective`).

    ``log="taylor"`` is meaningful for ``alignment`` only: the trace-normalised ``T x T`` matrices of ``head`` and
    ``relation`` have eigenvalues near ``1/T``, inside the convergence region (so nothing is raised) but where
    a few terms of the series are far from ``log`` (e.g. T = 64: MCE 3.0 instead of 7.2). A warning says so.

    Shapes (``forward``): ``hidden (T, d)``, ``labels (T,)`` long in ``[0, V)``, ``head_weight (V, d)``,
    ``logits (T, V)`` (required by ``relation`` and ``alignment``). Rows are the completion positions, already
    selected by the caller (labels != -100 after the causal shift).

    Returns:
        :class:`LossOutput` with ``total = mce`` and parts ``mce``, ``num_tokens`` (``T`` used, float) and, with
        ``diagnostics``, ``entropy`` (von Neumann entropy of the
        trace-normalised predicted matrix *before* the ``mu I`` shift: ``Ĥ Ĥᵀ`` for ``head``, ``K_P`` for
        ``relation``, ``C(z)`` for ``alignment``; the matrix entropy of the token representations, detached;
        the shift is left out because at ``mu = 0.5`` it would pull the ``alignment`` entropy to ``log d``),
        ``erank`` (its exp). Computed and returned in float32 (float64
        for float64 inputs) with autocast off, whatever the input dtype.

    Raises:
        ValueError: fewer than 2 tokens, NaN/Inf in ``hidden`` or ``logits``, labels outside ``[0, V)``, shape
            mismatches, ``logits`` missing for ``relation``/``alignment``, invalid options.
    """

    def __init__(
        self,
        *,
        formulation: str = "head",
        mu: float | None = None,
        lamb: float | None = None,
        log: str = "eigh",
        order: int = 4,
        max_tokens: int | None = None,
        scope: str = "local",
        seed: int | None = None,
        gram: str = "cosine",
        diagnostics: bool = True,
    ) -> None:
        super().__init__()
        problems = self.argument_problems(
            formulation=formulation,
            mu=mu,
            lamb=lamb,
            log=log,
            order=order,
            max_tokens=max_tokens,
            scope=scope,
            seed=seed,
            gram=gram,
        )
        if problems:
            name, expected, got = problems[0]
            raise ValueError(f"TokenMCELoss: `{name}` must be {expected}; got {got!r}")
        mu, lamb = self.resolve_shifts(formulation, mu, lamb)
        self.formulation = formulation
        self.mu = float(mu)
        self.lamb = float(lamb)
        self.log = log
        self.order = order
        self.max_tokens = max_tokens
        self.scope = scope
        self.seed = seed
        self.gram = gram
        self.diagnostics = bool(diagnostics)
        if log == "taylor" and formulation != "alignment":
            warnings.warn(
                f"TokenMCELoss: log='taylor' with formulation={formulation!r} is a poor approximation (the "
                "trace-normalised T x T matrices have eigenvalues near 1/T, where a few terms of the series are far "
                "from log); use log='eigh', or taylor with 'alignment' only",
                stacklevel=2,
            )
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    @staticmethod
    def resolve_shifts(formulation: str, mu: float | None, lamb: float | None) -> tuple[float, float]:
        """``(mu, lamb)`` with ``None`` replaced by the formulation's defaults (class docstring)."""
        default_mu, default_lamb = _DEFAULTS[formulation]
        mu = default_mu if mu is None else mu
        lamb = (mu if default_lamb is None else default_lamb) if lamb is None else lamb
        return mu, lamb

    @classmethod
    def argument_problems(
        cls,
        *,
        formulation: str = "head",
        mu: float | None = None,
        lamb: float | None = None,
        log: str = "eigh",
        order: int = 4,
        max_tokens: int | None = None,
        scope: str = "local",
        seed: int | None = None,
        gram: str = "cosine",
    ) -> list[tuple[str, str, object]]:
        """Every invalid argument as ``(name, expected, got)``: the one validation of these arguments, used by
        ``__init__`` and by configs that expose them under other names (``LMConfig``)."""
        out: list[tuple[str, str, object]] = []

        def is_int(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_number(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        if formulation not in FORMULATIONS:
            out.append(("formulation", f"one of {FORMULATIONS}", formulation))
            return out
        given_lamb = lamb
        mu, lamb = cls.resolve_shifts(formulation, mu, lamb)
        if not is_number(mu) or not mu > 0:
            out.append(("mu", "a number > 0 (the log needs a positive-definite matrix)", mu))
        if given_lamb is not None and (not is_number(lamb) or not lamb >= 0):
            out.append(("lamb", "a number >= 0", lamb))
        if log not in ("eigh", "taylor"):
            out.append(("log", "'eigh' or 'taylor'", log))
        if not is_int(order) or order < 1:
            out.append(("order", "an integer >= 1", order))
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 2):
            out.append(("max_tokens", "None or an integer >= 2", max_tokens))
        if scope not in ("local", "global"):
            out.append(("scope", "'local' or 'global'", scope))
        if gram not in ("cosine", "raw"):
            out.append(("gram", "'cosine' or 'raw'", gram))
        if seed is not None and not is_int(seed):
            out.append(("seed", "None or an int", seed))
        return out

    def extra_repr(self) -> str:
        return (
            f"formulation={self.formulation!r}, mu={self.mu}, lamb={self.lamb}, log={self.log!r}, order={self.order}, "
            f"max_tokens={self.max_tokens}, scope={self.scope!r}, gram={self.gram!r}"
        )

    # -- input handling ---------------------------------------------------------------------------------------

    def _check(self, hidden: Tensor, labels: Tensor, head_weight: Tensor, logits: Tensor | None) -> None:
        fn = f"TokenMCELoss(formulation={self.formulation!r})"
        check_matrix(fn, "hidden", hidden)
        t, d = hidden.shape
        check_labels(fn, labels, n=t)
        check_matrix(fn, "head_weight", head_weight, cols=d)
        vocab = head_weight.shape[0]
        features = {"hidden": hidden}
        if self.formulation in ("relation", "alignment"):
            if logits is None:
                raise ValueError(f"{fn}: `logits` of shape (T, V) = ({t}, {vocab}) are required; got None")
            check_matrix(fn, "logits", logits, rows=t, cols=vocab)
            features["logits"] = logits
        check_finite_and_range(fn, features, labels, vocab)

    def _subsample(self, t: int, device: torch.device) -> Tensor | None:
        if self.max_tokens is None or t <= self.max_tokens:
            return None
        perm = (
            torch.randperm(t, generator=self._generator) if self._generator is not None else torch.randperm(t)
        )
        return perm[: self.max_tokens].to(device)

    # -- matrices per formulation -----------------------------------------------------------------------------

    def _matrices(
        self, hidden: Tensor, labels: Tensor, head_weight: Tensor, logits: Tensor | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(target, prediction, prediction before the shift)."""
        if self.formulation == "head":
            target = head_weight.detach()[labels].to(dtype)
            eye = torch.eye(labels.shape[0], dtype=dtype, device=hidden.device)
            k = info.gram(hidden.to(dtype))
            return (
                _trace_normalise(info.gram(target) + self.lamb * eye),
                _trace_normalise(k + self.mu * eye),
                k,
            )
        assert logits is not None
        probs = F.softmax(logits.to(dtype), dim=-1)
        if self.formulation == "relation":
            eye = torch.eye(labels.shape[0], dtype=dtype, device=logits.device)
            same_target = (labels[:, None] == labels[None, :]).to(dtype)  # Y Yᵀ of the one-hot targets
            k = info.gram(probs, normalize=self.gram == "cosine")
            return _trace_normalise(same_target + self.lamb * eye), _trace_normalise(k + self.mu * eye), k
        w = head_weight.to(dtype)
        eye = torch.eye(w.shape[1], dtype=dtype, device=w.device)
        k = info.covariance(probs @ w)
        return info.covariance(w.detach()[labels]) + self.lamb * eye, k + self.mu * eye, k

    def _alignment_on_the_token_side(
        self, labels: Tensor, head_weight: Tensor, logits: Tensor, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """``alignment`` with the exact log, from the ``T x T`` side (:func:`matrix_llm.info.feature_mce`, the same
        value as the ``d x d`` MCE at ``O(T² d + T³)``), and the centred Gram of ``z`` whose spectrum is that of
        ``C(z)`` (for the diagnostics)."""
        w = head_weight.to(dtype)
        z = F.softmax(logits.to(dtype), dim=-1) @ w
        loss = info.feature_mce(w.detach()[labels], z, lamb=self.lamb, mu=self.mu)
        zc = F.normalize(z, dim=-1)
        zc = zc - zc.mean(dim=0, keepdim=True)
        return loss, zc @ zc.mT / z.shape[0]

    def forward(
        self, hidden: Tensor, labels: Tensor, head_weight: Tensor, logits: Tensor | None = None
    ) -> LossOutput:
        """``hidden (T, d)``, ``labels (T,)``, ``head_weight (V, d)``, ``logits (T, V) | None`` -> :class:`LossOutput`."""
        self._check(hidden, labels, head_weight, logits)
        uses_logits = self.formulation != "head"
        if self.scope == "global":
            labels = all_gather_no_grad(labels)
            if uses_logits:  # only what the formulation uses crosses the wire
                logits = all_gather_with_grad(logits)
            else:
                hidden = all_gather_with_grad(hidden)
        t = labels.shape[0]
        if t < 2:
            where = "over all ranks" if self.scope == "global" else "in this micro-batch"
            raise ValueError(
                f"TokenMCELoss: needs at least 2 completion tokens, got {t} {where} (a matrix over tokens needs two "
                "rows); check the label mask, or skip the matrix term for this batch."
            )
        idx = self._subsample(t, labels.device)
        if idx is not None:
            labels = labels[idx]
            if uses_logits:
                logits = logits[idx]  # type: ignore[index]
            else:
                hidden = hidden[idx]
            t = labels.shape[0]
        dtype = (
            work_dtype(logits.dtype, head_weight.dtype)
            if uses_logits
            else work_dtype(hidden.dtype, head_weight.dtype)
        )  # type: ignore[arg-type]
        with no_autocast(labels):
            if self.formulation == "alignment" and self.log == "eigh":
                loss, k = self._alignment_on_the_token_side(labels, head_weight, logits, dtype)  # type: ignore[arg-type]
            else:
                a, b, k = self._matrices(hidden, labels, head_weight, logits, dtype)
                loss = info.mce(a, b, log=self.log, order=self.order, trace_term=True)
            parts = {"mce": loss, "num_tokens": torch.tensor(float(t), dtype=dtype, device=loss.device)}
            if self.diagnostics:
                with torch.no_grad():
                    ent = info.entropy(k.detach())
                parts.update(entropy=ent, erank=ent.exp())
        return LossOutput(total=loss, parts=detached_parts(**parts))
