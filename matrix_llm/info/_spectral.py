"""Private numerics shared by every function in :mod:`matrix_llm.info`.

One implementation of each of: input validation, "upcast + no autocast", "symmetrise + eigh/eigvalsh",
"mask eigenvalues <= 0", and the exact matrix logarithm with its Daleckii–Krein backward. Nothing here is
public API.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch.autograd.function import once_differentiable

# Device types for which torch.autocast accepts ``enabled=False``.
_AUTOCAST_DEVICES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu", "xla", "mtia", "maia", "ipu"})
_UNIT_EPS = 1e-12  # F.normalize's default: rows with a smaller norm are divided by it


# --------------------------------------------------------------------------------------------------------------
# validation


def _check_tensor(fn: str, name: str, x: object, *, min_ndim: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{fn}: expected `{name}` to be a torch.Tensor; got {type(x).__name__}")
    if not (x.is_floating_point()):
        raise ValueError(
            f"{fn}: expected `{name}` to have a real floating-point dtype (float16/bfloat16/float32/float64); "
            f"got {x.dtype}"
        )
    if x.ndim < min_ndim:
        raise ValueError(
            f"{fn}: expected `{name}` of shape (..., rows, cols) with at least {min_ndim} dims; "
            f"got shape {tuple(x.shape)}"
        )
    return x


def _check_square(fn: str, name: str, x: object) -> torch.Tensor:
    x = _check_tensor(fn, name, x)
    if x.shape[-1] != x.shape[-2] or x.shape[-1] == 0:
        raise ValueError(
            f"{fn}: expected `{name}` to be a non-empty batch of square matrices (..., n, n); "
            f"got shape {tuple(x.shape)}"
        )
    return x


def _check_pair(fn: str, a_name: str, a: object, b_name: str, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a = _check_square(fn, a_name, a)
    b = _check_square(fn, b_name, b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{fn}: `{a_name}` and `{b_name}` must be matrices of the same size; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{fn}: the batch dims of `{a_name}` {tuple(a.shape[:-2])} and `{b_name}` {tuple(b.shape[:-2])} "
            "do not broadcast"
        ) from None
    if a.device != b.device:
        raise ValueError(f"{fn}: `{a_name}` is on {a.device} but `{b_name}` is on {b.device}")
    return a, b


def _check_alpha(fn: str, alpha: object) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"{fn}: expected `alpha` to be a finite number > 0; got {alpha!r}")
    return float(alpha)


def _check_positive(fn: str, name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{fn}: expected `{name}` to be a finite number > 0; got {value!r}")
    return float(value)


def _check_choice(fn: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: expected `{name}` to be one of {choices}; got {value!r}")
    return value  # type: ignore[return-value]


def _check_order(fn: str, order: object) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"{fn}: expected `order` to be an integer >= 1; got {order!r}")
    return order


# --------------------------------------------------------------------------------------------------------------
# dtype / autocast


def work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are upcast)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _out_dtype(*dtypes: torch.dtype) -> torch.dtype:
    out = dtypes[0]
    for dt in dtypes[1:]:
        out = torch.promote_types(out, dt)
    return out


@contextlib.contextmanager
def no_autocast(x: torch.Tensor) -> Iterator[None]:
    """Disable autocast for the device of ``x`` (spectral ops never run in reduced precision)."""
    if x.device.type in _AUTOCAST_DEVICES:
        with torch.autocast(device_type=x.device.type, enabled=False):
            yield
    else:  # pragma: no cover - exotic device types have no autocast
        yield


def _sym(x: torch.Tensor) -> torch.Tensor:
    return (x + x.mT) * 0.5


def _trace(x: torch.Tensor) -> torch.Tensor:
    return x.diagonal(dim1=-2, dim2=-1).sum(-1)


def _eye_like(x: torch.Tensor) -> torch.Tensor:
    return torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)


class _Rows(torch.autograd.Function):
    """Centre (``z - mean`` over rows), normalise every row (``z_i / max(||z_i||, eps)``, ``F.normalize``'s value
    and gradient, ``eps = 1e-12``: a zero row stays zero), centre, scale: the steps :func:`_rows` asks for, as one
    autograd node. Backward in reverse order: ``scale · g``, centring ``g - mean(g)`` (``H`` is symmetric), and
    ``(g - u (u·g)) / ||z||`` per row for the normalisation (``u`` the unit row; ``g / eps`` for a row below
    ``eps``, whose norm is clamped): a few elementwise passes instead of autograd's chain through norm, clamp,
    division and mean."""

    @staticmethod
    def forward(
        ctx, z: torch.Tensor, normalize: bool, center: bool, center_first: bool, scale: float
    ) -> torch.Tensor:  # type: ignore[override]
        if center and center_first:
            z = z - z.mean(dim=-2, keepdim=True)
        unit = norm = None
        if normalize:
            norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
            z = unit = z / norm.clamp_min(_UNIT_EPS)
        if center and not center_first:
            z = z - z.mean(dim=-2, keepdim=True)
        if scale != 1.0:
            z = z * scale
        ctx.save_for_backward(unit, norm)
        ctx.steps = normalize, center, center_first, scale
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        unit, norm = ctx.saved_tensors
        normalize, center, center_first, scale = ctx.steps
        if scale != 1.0:
            g = g * scale
        if center and not center_first:
            g = g - g.mean(dim=-2, keepdim=True)
        if normalize:
            along = (unit * g).sum(-1, keepdim=True).masked_fill_(norm < _UNIT_EPS, 0)
            g = (g - unit * along).div_(norm.clamp_min(_UNIT_EPS))
        if center and center_first:
            g = g - g.mean(dim=-2, keepdim=True)
        return g, None, None, None, None


def _rows(
    z: torch.Tensor, *, normalize: bool, center: bool, center_first: bool = False, scale: float = 1.0
) -> torch.Tensor:
    """Row-normalise and/or centre a ``(..., n, d)`` row matrix (rows are samples), then multiply by ``scale``.

    ``center_first=False``: normalise, then centre (Matrix-SSL's ``H_n Ẑ``). ``center_first=True``: centre,
    then normalise (Diff-eRank). A zero row stays a zero row (no NaN), as with ``F.normalize``.
    """
    if not (normalize or center) and scale == 1.0:
        return z
    return _Rows.apply(z, normalize, center, center_first, float(scale))


# --------------------------------------------------------------------------------------------------------------
# eigenvalues


def _eigvalsh(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of ``(x + xᵀ)/2``; x must already be in the work dtype, autocast off.

    The gradient of ``eigvalsh`` is ``V diag(g) Vᵀ``: it never divides by eigenvalue gaps, so it is stable at
    repeated eigenvalues.
    """
    return torch.linalg.eigvalsh(_sym(x))


def _positive_mask(w: torch.Tensor) -> torch.Tensor:
    """Eigenvalues that count as > 0: above ``eps * max(w)`` (``eps`` of the work dtype).

    This treats most round-off eigenvalues of a rank-deficient matrix (``±1e-17 * max`` in float64) as zeros,
    while keeping genuine small eigenvalues: ``matrix_rank``'s ``m * eps`` default would drop real spectral mass
    of ill-conditioned float32 inputs (measured: 1e-4 relative entropy error for low-rank-plus-noise features).
    An eigenvalue ``p <= eps`` contributes at most ``eps * log(1/eps)`` to the entropy either way.
    """
    wmax = w.detach().amax(dim=-1, keepdim=True).clamp_min(0)
    tol = wmax * torch.finfo(w.dtype).eps
    return w.detach() > tol


def _xlogx_sum(w: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i log w_i`` over eigenvalues with ``0 log 0 = 0``; eigenvalues <= tol are masked out."""
    mask = _positive_mask(w)
    safe = torch.where(mask, w, torch.ones_like(w))
    return torch.where(mask, safe * torch.log(safe), torch.zeros_like(w)).sum(-1)


def _entropy_from_eigvals(w: torch.Tensor, alpha: float) -> torch.Tensor:
    """Von Neumann (alpha = 1) or Rényi entropy of the distribution ``w_+ / sum(w_+)``, natural log.

    Non-positive eigenvalues are dropped and the rest renormalised. All-zero input gives 0 (not NaN).
    """
    mask = _positive_mask(w)
    wpos = torch.where(mask, w, torch.zeros_like(w))
    total = wpos.sum(-1, keepdim=True)
    total = torch.where(total > 0, total, torch.ones_like(total))
    p = torch.where(mask, wpos / total, torch.ones_like(w))  # masked entries -> 1 so log/pow stay finite
    zero = torch.zeros_like(w)
    if alpha == 1.0:
        return -torch.where(mask, p * torch.log(p), zero).sum(-1)
    s = torch.where(mask, p.pow(alpha), zero).sum(-1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.log(s) / (1.0 - alpha)


# --------------------------------------------------------------------------------------------------------------
# exact matrix logarithm with Daleckii–Krein backward


def _log_divided_differences(w: torch.Tensor, logw: torch.Tensor) -> torch.Tensor:
    """``L_ij = (log w_i - log w_j) / (w_i - w_j)``, ``L_ii = 1 / w_i`` (first divided differences of log).

    Close pairs (``|w_i - w_j| <= w_j / 2``) use ``log1p((w_i - w_j)/w_j) / (w_i - w_j)``, which keeps full
    relative accuracy as the gap shrinks to 0; exact ties give ``1 / w``. Requires ``w > 0``.
    """
    wi = w.unsqueeze(-1)
    wj = w.unsqueeze(-2)
    diff = wi - wj
    close = diff.abs() <= 0.5 * wj
    tie = diff == 0
    safe_diff = torch.where(tie, torch.ones_like(diff), diff)
    near = torch.where(tie, 1.0 / wj.expand_as(diff), torch.log1p(diff / wj) / safe_diff)
    far = (logw.unsqueeze(-1) - logw.unsqueeze(-2)) / torch.where(close, torch.ones_like(diff), diff)
    lmat = torch.where(close, near, far)
    return (lmat + lmat.mT) * 0.5


def _eigh_pd(q: torch.Tensor, check: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``eigh`` of a symmetric ``q`` assumed positive definite: ``(w, log w, V)``.

    With ``check`` set to the caller's name, a ``ValueError`` is raised when an eigenvalue is ``<= 0`` (``eigh``
    synchronises with the device anyway). Eigenvalues below ``eps * max(w)`` are clamped there.
    """
    w, v = torch.linalg.eigh(q)
    if check is not None and w.numel() and bool((w[..., 0] <= 0).any()):
        lo = float(w[..., 0].min())
        raise ValueError(
            f"{check}: the exact (eigh) log needs a positive-definite `q`; its smallest eigenvalue is {lo:.6g}. "
            "Shift it (q + mu * I with mu > 0), or pass check=False to clamp eigenvalues at eps * max."
        )
    floor = w.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny) * torch.finfo(w.dtype).eps
    w = torch.maximum(w, floor)
    return w, torch.log(w), v


class _LogmEigh(torch.autograd.Function):
    """``log(q)`` of a symmetric positive-definite ``q`` via ``eigh``, with the Daleckii–Krein backward.

    Backward: ``grad_q = V (L ∘ (Vᵀ sym(G) V)) Vᵀ`` with ``L`` from :func:`_log_divided_differences`; no
    ``1/(w_i - w_j)`` blow-up at (near-)repeated eigenvalues.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, check: str | None) -> torch.Tensor:  # type: ignore[override]
        w, logw, v = _eigh_pd(q, check)
        ctx.save_for_backward(w, logw, v)
        return (v * logw.unsqueeze(-2)) @ v.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        w, logw, v = ctx.saved_tensors
        lmat = _log_divided_differences(w, logw)
        inner = v.mT @ _sym(grad) @ v
        return v @ (lmat * inner) @ v.mT, None


class _TracePLogQ(torch.autograd.Function):
    """``tr(p log q)`` for symmetric positive-definite ``q`` (same batch shape as ``p``), Daleckii–Krein backward.

    Cheaper than ``<p, log q>`` through :class:`_LogmEigh`: with ``M = Vᵀ p V`` the value is
    ``sum_i log(w_i) M_ii`` and ``grad_q = V (L ∘ sym(M)) Vᵀ`` reuses ``M``; ``log q`` (the gradient wrt ``p``)
    is only formed when ``p`` requires grad.
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, check: str | None) -> torch.Tensor:  # type: ignore[override]
        w, logw, v = _eigh_pd(q, check)
        m = v.mT @ p @ v
        ctx.save_for_backward(w, logw, v, m)
        return (logw * m.diagonal(dim1=-2, dim2=-1)).sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        w, logw, v, m = ctx.saved_tensors
        g = grad[..., None, None]
        grad_p = grad_q = None
        if ctx.needs_input_grad[1]:
            grad_q = (v @ (_log_divided_differences(w, logw) * _sym(m)) @ v.mT) * g
        if ctx.needs_input_grad[0]:
            grad_p = ((v * logw.unsqueeze(-2)) @ v.mT) * g
        return grad_p, grad_q, None


def _logm_eigh(q: torch.Tensor, check: str | None = None) -> torch.Tensor:
    """Exact ``log((q + qᵀ)/2)``; ``q`` in the work dtype, autocast off. ``check``: caller's name, or None."""
    return _LogmEigh.apply(_sym(q), check)


def _trace_p_logm(p: torch.Tensor, q: torch.Tensor, check: str | None = None) -> torch.Tensor:
    """Exact ``tr(p log((q + qᵀ)/2))``, batch dims broadcast; work dtype, autocast off."""
    shape = torch.broadcast_shapes(p.shape, q.shape)
    return _TracePLogQ.apply(p.expand(shape), _sym(q).expand(shape), check)


# --------------------------------------------------------------------------------------------------------------
# Taylor logarithm around I


def _taylor_radius(x: torch.Tensor) -> float:
    """Spectral radius of ``x`` (max over the batch), cheap Frobenius bound first; no autograd."""
    with torch.no_grad():
        fro = torch.linalg.matrix_norm(x, ord="fro")
        if fro.numel() == 0:
            return 0.0
        bound = float(fro.max())
        if bound < 1.0:
            return bound  # an upper bound, enough to accept
        if torch.equal(x, x.mT):
            eig = torch.linalg.eigvalsh(x).abs()
        else:
            eig = torch.linalg.eigvals(x).abs()
        return float(eig.max())


def _check_taylor_converges(fn: str, radius: float) -> None:
    """Raise unless the spectral radius of ``q - I`` is below 1 (where the Taylor series of ``log q`` converges)."""
    if radius >= 1.0:
        raise ValueError(
            f"{fn}: the Taylor series of log(q) around I converges only when the spectral radius of "
            f"q - I is < 1 (eigenvalues of q inside the disc |lambda - 1| < 1); got spectral radius "
            f"{radius:.6g}. Shift q by a larger mu (q + mu I), rescale it, use the exact log='eigh' path, "
            "or pass check=False to accept a divergent series."
        )


def _taylor_log(q: torch.Tensor, order: int, check: bool, fn: str) -> torch.Tensor:
    """``sum_{k=1}^{order} (-1)^{k+1} (q - I)^k / k`` by Horner's rule (``order - 1`` matmuls)."""
    x = q - _eye_like(q)
    if check:
        _check_taylor_converges(fn, _taylor_radius(x))
    eye = _eye_like(q)
    acc = x * (((-1.0) ** (order + 1)) / order)
    for k in range(order - 1, 0, -1):
        acc = x @ (acc + eye * (((-1.0) ** (k + 1)) / k))
    return acc
