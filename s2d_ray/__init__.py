"""s2d-ray: video dataset distillation by static-dynamic disentanglement, on Ray."""

__version__ = "0.1.0"
