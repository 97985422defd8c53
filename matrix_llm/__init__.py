"""matrix_llm: matrix information theory for training with the Hugging Face stack.

Importing the package is side-effect free; heavy modules (transformers, datasets) are imported only by the
submodules that need them. The pure maths lives in :mod:`matrix_llm.info` and :mod:`matrix_llm.losses`.
"""

__version__ = "0.1.0"
