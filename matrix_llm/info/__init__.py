"""Matrix information theory in pure torch: exact, differentiable, batched.

Public API (all options keyword-only; leading dims are batch dims; float64 in gives float64 out, half and
bfloat16 are computed in float32 and cast back; spectral ops never run under autocast):

- builders: :func:`gram` ``(*, n, d) -> (*, n, n)``, :func:`covariance` ``(*, n, d) -> (*, d, d)``
- entropies: :func:`entropy` (von Neumann / Rényi of a trace-normalised PSD matrix), :func:`erank`,
  :func:`feature_entropy` (from features, on the cheaper side), :func:`matrix_entropy_unnormalized`,
  :func:`matrix_nuclear_norm` (Matrix Nuclear-Norm of a row matrix)
- two matrices: :func:`mce`, :func:`mkl`, :func:`matrix_log`, :func:`taylor_log`; from features on the
  cheaper side: :func:`feature_mce`, :func:`feature_mce_symmetric` (both directions at once),
  :func:`feature_mkl`, :func:`feature_uniformity` (``O(n²d + n³)`` for ``n < d`` rows)
- neural-collapse metrics: :func:`mutual_information`, :func:`mir`, :func:`hdr`, :func:`mir_hdr` (both at once);
  :class:`UndefinedRatioError` (a ``ValueError``) where their ratio is 0/0
- coding rate: :func:`tcr`
- for loss modules: :func:`work_dtype` (the upcast rule) and :func:`no_autocast` (the autocast switch)

What each formula computes: docs/formulations.md; tests/info/ checks them against closed forms and float64
references. This package imports
only torch (never transformers, accelerate or datasets).
"""

from ._coding import tcr
from ._divergence import matrix_log, mce, mkl, taylor_log
from ._entropy import (
    covariance,
    entropy,
    erank,
    feature_entropy,
    gram,
    matrix_entropy_unnormalized,
    matrix_nuclear_norm,
)
from ._feature import feature_mce, feature_mce_symmetric, feature_mkl, feature_uniformity
from ._mutual import UndefinedRatioError, hdr, mir, mir_hdr, mutual_information
from ._spectral import no_autocast, work_dtype

__all__ = [
    "UndefinedRatioError",
    "covariance",
    "entropy",
    "erank",
    "feature_entropy",
    "feature_mce",
    "feature_mce_symmetric",
    "feature_mkl",
    "feature_uniformity",
    "gram",
    "hdr",
    "matrix_entropy_unnormalized",
    "matrix_log",
    "matrix_nuclear_norm",
    "mce",
    "mir",
    "mir_hdr",
    "mkl",
    "mutual_information",
    "no_autocast",
    "taylor_log",
    "tcr",
    "work_dtype",
]
