"""Triton backend (placeholder until the fused kernels land)."""
IMPLEMENTED = frozenset()


def is_available():
    return False, "the Triton kernels have not landed yet"
