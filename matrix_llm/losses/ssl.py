"""Matrix-SSL: matrix-uniformity + matrix-alignment (Zhang et al., ICML 2024), and MEC (Liu et al., NeurIPS 2022),
its predecessor; docs/formulations.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import info
from ..distributed import all_gather_no_grad, all_gather_with_grad
from ..info import no_autocast, work_dtype  # the one autocast switch and upcast rule of info/ and losses/
from .base import LossOutput, check_finite_and_range, check_matrix, detached_parts

__all__ = ["MECLoss", "MatrixSSLLoss"]

PRESETS = ("exact", "official")


def _student_teacher(
    fn: str, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor, gather: bool
) -> tuple[Tensor, Tensor]:
    """``(student, teacher)``, ``(2, M, d)`` each in the work dtype, paired as the official code pairs the views
    (teacher of view 2 with student of view 1, and ``(p1, z2)``); with ``gather``, the rows of every rank
    (the student's with gradients). Checks the shapes and values first."""
    check_matrix(fn, "z1", z1)
    m, d = z1.shape
    for name, x in (("z2", z2), ("p1", p1), ("p2", p2)):
        check_matrix(fn, name, x, rows=m, cols=d)
    check_finite_and_range(fn, {"z1": z1, "z2": z2, "p1": p1, "p2": p2})
    dtype = work_dtype(z1.dtype, z2.dtype, p1.dtype, p2.dtype)
    student = torch.stack([z1, z2]).to(dtype)
    teacher = torch.stack([p2, p1]).detach().to(dtype)
    if gather:  # along the sample dim: (2, m, d) -> (m, 2, d) -> gather -> (M, 2, d) -> (2, M, d)
        student = all_gather_with_grad(student.transpose(0, 1).contiguous()).transpose(0, 1)
        teacher = all_gather_no_grad(teacher.transpose(0, 1).contiguous()).transpose(0, 1)
    if student.shape[-2] < 2:
        raise ValueError(f"{fn}: needs at least 2 samples per view; got {student.shape[-2]}")
    return student, teacher


class MatrixSSLLoss(nn.Module):
    r"""Matrix-SSL loss: matrix-uniformity plus ``gamma`` times matrix-alignment, symmetrised over two views.

    With row-normalised features (``m`` rows of dimension ``d``), centring matrix ``H_m`` and
    ``C(a, b) = (1/m) aᵀ H_m b`` (:func:`matrix_llm.info.covariance` for ``a = b``):

    - uniformity ``U(p, z) = MCE(λ I_d, C(p, z) + μ I_d)``
    - alignment ``A(p, z) = MCE(C(p, p) + μ I_d, C(z, z) + μ I_d)`` (the teacher side has no gradient)
    - ``L = 0.5 [U(p2, z1) + U(p1, z2) + γ A(p2, z1) + γ A(p1, z2)]``

    where ``z1, z2`` are the online (student) outputs of the two views and ``p1, p2`` the EMA teacher's outputs
    (detached here). **Careful: ``p`` is the teacher**, as in the official code (docs/formulations.md).

    Presets:

    - ``"official"`` reproduces ``mce_loss_func`` of yifanzhang-pro/Matrix-SSL (main_pretrain.py) exactly:
      Taylor log of order ``order`` (4) around ``I`` applied to the non-symmetric cross-covariance, **no**
      ``+tr(Q)`` term (``MCE = -tr(P log Q)``), code defaults ``lamb = mu = 0.5``, ``gamma = 1``.
    - ``"exact"`` (default): eigendecomposition log with the Daleckii–Krein backward (finite at the uniformity
      optimum ``Q = c I``), no ``+tr(Q)`` term either (with it and ``λ = μ`` the uniformity optimum is
      ``C = 0``, a collapse; docs/formulations.md). **Deviation:** ``eigh`` needs a
      symmetric matrix, so the uniformity term uses the symmetric surrogate ``(C(p, z) + C(p, z)ᵀ)/2`` of the
      cross-covariance (docs/formulations.md). ``tr(P log Q)`` with ``P = λI`` only sees the eigenvalues of ``Q``,
      which for the surrogate differ from those of the non-symmetric ``C(p, z)``; they coincide when
      ``C(p, z)`` is symmetric (e.g. ``p = z``). A cross-covariance is not PSD: the surrogate's eigenvalues lie
      in ``[-1, 1]`` for unit rows, so ``Q`` is positive definite only while they stay above ``-mu`` (teacher
      and student anti-aligned beyond that is not a regime training reaches; :func:`matrix_llm.info.mce`
      clamps the eigenvalues of ``Q`` at ``eps * max`` there instead of raising).

    Args:
        preset: ``"exact"`` or ``"official"``.
        gamma: alignment weight ``γ`` (``0`` gives the uniformity term only, i.e. MEC-like).
        lamb: uniformity target scale ``λ`` (``P = λI``); code default 0.5 (the README's runs use 1.0).
        mu: shift ``μ`` added to both covariances; code default 0.5 (README: 1.0).
        order: Taylor order (``"official"`` only).
        trace_term: add ``tr(Q)`` to each MCE; ``None``: ``False`` (both presets).
        check: ``"official"`` only: verify each call that the Taylor series converges (spectral radius of
            ``Q - I`` below 1) and raise ``ValueError`` otherwise. When ``||Q - I||_F >= 1`` (always for large
            ``d`` at ``mu = 0.5``) this costs a general eigenvalue computation and a device sync; the official
            code does not check (``check=False``).
        gather: concatenate the features of all ranks first with
            :func:`matrix_llm.distributed.all_gather_with_grad` (the official code gathers); identity on one
            process.

    Shapes (``forward``): ``z1, z2, p1, p2``: ``(m, d)`` each, ``m >= 2``.

    Returns:
        :class:`LossOutput` with ``total = uniformity + gamma * alignment`` and parts ``uniformity``
        (``0.5 [U(p2, z1) + U(p1, z2)]``) and ``alignment`` (``0.5 [A(p2, z1) + A(p1, z2)]``, before ``gamma``).
        Computed and returned in float32 (float64 for float64 inputs), autocast off.

    References:
        [0] Y. Zhang, Z. Tan, J. Yang, W. Huang, Y. Yuan, "Matrix Information Theory for Self-Supervised
            Learning", ICML 2024, arXiv:2305.17326; code: github.com/yifanzhang-pro/Matrix-SSL.
    """

    def __init__(
        self,
        *,
        preset: str = "exact",
        gamma: float = 1.0,
        lamb: float = 0.5,
        mu: float = 0.5,
        order: int = 4,
        trace_term: bool | None = None,
        check: bool = True,
        gather: bool = False,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"MatrixSSLLoss: `preset` must be one of {PRESETS}; got {preset!r}")
        for name, value, lower in (("gamma", gamma, 0.0), ("lamb", lamb, 0.0), ("mu", mu, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lower:
                raise ValueError(f"MatrixSSLLoss: `{name}` must be a number >= {lower}; got {value!r}")
        if preset == "exact" and not mu > 0:
            raise ValueError(
                f"MatrixSSLLoss: preset 'exact' needs `mu` > 0 (log of a PSD matrix); got {mu!r}"
            )
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"MatrixSSLLoss: `order` must be an integer >= 1; got {order!r}")
        self.preset = preset
        self.gamma = float(gamma)
        self.lamb = float(lamb)
        self.mu = float(mu)
        self.order = order
        self.trace_term = False if trace_term is None else bool(trace_term)
        self.check = bool(check)
        self.gather = bool(gather)

    def extra_repr(self) -> str:
        return (
            f"preset={self.preset!r}, gamma={self.gamma}, lamb={self.lamb}, mu={self.mu}, order={self.order}, "
            f"trace_term={self.trace_term}, gather={self.gather}"
        )

    def forward(self, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor) -> LossOutput:
        """Student outputs ``z1, z2`` and teacher outputs ``p1, p2`` of the two views, ``(m, d)`` each."""
        student, teacher = _student_teacher(
            f"MatrixSSLLoss(preset={self.preset!r})", z1, z2, p1, p2, self.gather
        )
        with no_autocast(student):
            zs = F.normalize(student, dim=-1)
            ps = F.normalize(teacher, dim=-1)
            # both terms from the m x m side when that is smaller than d (info.feature_uniformity / feature_mce:
            # the same values as the d x d MCEs; the official preset keeps its Taylor series, on C(p, z) itself)
            log = "taylor" if self.preset == "official" else "eigh"
            options = dict(
                normalize=False, trace_term=self.trace_term, log=log, order=self.order, check=self.check
            )
            if self.preset == "exact":
                options["check"] = True  # a non-positive-definite Q is an error on the exact path
            uniformity = info.feature_uniformity(
                ps, zs, lamb=self.lamb, mu=self.mu, symmetric=self.preset == "exact", **options
            )
            alignment = info.feature_mce(ps, zs, lamb=self.mu, mu=self.mu, **options)
            uniformity = uniformity.mean()  # 0.5 * (U(p2, z1) + U(p1, z2))
            alignment = alignment.mean()
            total = uniformity + self.gamma * alignment
        return LossOutput(total=total, parts=detached_parts(uniformity=uniformity, alignment=alignment))


class MECLoss(nn.Module):
    r"""Maximum Entropy Coding (Liu et al., NeurIPS 2022; docs/formulations.md), student vs EMA teacher.

    With row-normalised teacher ``p`` and student ``z`` (``m`` rows of dimension ``d``), ``λ = d / (m ε²)``:

    ``L = -(1 / (λ m)) · 0.5 [tr log(I_m + λ p2 z1ᵀ) + tr log(I_m + λ p1 z2ᵀ)]``

    which is ``-μ/m ·`` the coding length ``log det(I + λ Z1ᵀ Z2)`` of the paper up to its ``μ = (m + d)/2`` scale
    (the official code's ``-mec / λ``). ``log="taylor"`` uses the code's order-``order`` Taylor series (valid
    while the spectral radius of ``λ p zᵀ`` is below 1: at collapse it is ``d / ε²``, which is why the code
    warms ``λ`` up); ``log="exact"`` (default) takes ``log det`` by LU (``slogdet``, the determinant must stay
    positive: it is ``> 0`` whenever the radius is below 1, and an error is raised otherwise).

    Args:
        eps_sq: the distortion ``ε²`` (code default 64).
        log: ``"exact"`` or ``"taylor"``.
        order: Taylor order (``"taylor"`` only).
        gather: features of all ranks first (:func:`matrix_llm.distributed.all_gather_with_grad`).

    Returns:
        :class:`LossOutput` with ``total`` and the part ``mec`` (the coding length per sample, ``-total·λ``).
    """

    def __init__(
        self, *, eps_sq: float = 64.0, log: str = "exact", order: int = 4, gather: bool = False
    ) -> None:
        super().__init__()
        if isinstance(eps_sq, bool) or not isinstance(eps_sq, (int, float)) or not eps_sq > 0:
            raise ValueError(f"MECLoss: `eps_sq` must be a number > 0; got {eps_sq!r}")
        if log not in ("exact", "taylor"):
            raise ValueError(f"MECLoss: `log` must be 'exact' or 'taylor'; got {log!r}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"MECLoss: `order` must be an integer >= 1; got {order!r}")
        self.eps_sq, self.log, self.order, self.gather = float(eps_sq), log, order, bool(gather)

    def _trace_log(self, c: Tensor) -> Tensor:
        """``tr log(I + c)`` of the ``(2, m, m)`` stack ``c``."""
        eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
        if self.log == "taylor":
            return info.taylor_log(eye + c, order=self.order, check=False).diagonal(dim1=-2, dim2=-1).sum(-1)
        sign, logabsdet = torch.linalg.slogdet(eye + c)
        if bool((sign <= 0).any()):
            raise ValueError(
                "MECLoss: det(I + λ p zᵀ) <= 0 (teacher and student anti-aligned); lower the "
                "learning rate or raise `eps_sq`"
            )
        return logabsdet

    def forward(self, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor) -> LossOutput:
        student, teacher = _student_teacher("MECLoss", z1, z2, p1, p2, self.gather)
        m, d = student.shape[-2:]
        with no_autocast(student):
            lam = d / (m * self.eps_sq)
            c = lam * F.normalize(teacher, dim=-1) @ F.normalize(student, dim=-1).mT
            mec = self._trace_log(c).mean() / m
            total = -mec / lam
        return LossOutput(total=total, parts=detached_parts(mec=mec))
