"""s2d-ray: video dataset distillation by static-dynamic disentanglement, on Ray."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import s2d_ray` (and every light module under it) does not import torch.
    if name == "load_distilled":
        from s2d_ray.synthetic.io import load_distilled

        return load_distilled
    raise AttributeError(f"module 's2d_ray' has no attribute {name!r}")
