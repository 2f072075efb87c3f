"""Network registry: build any network by name with ``create``; see ``MODELS`` for names.

Importing this package registers every built-in network.
"""

from s2d_ray.models import convnet, convnet3d, recurrent  # noqa: F401  (registration)
from s2d_ray.models.convnet import ConvNet
from s2d_ray.models.convnet3d import ConvNet3D
from s2d_ray.models.functional import flatten_params, functional_forward, param_shapes, unflatten
from s2d_ray.models.precision import Precision, autocast_context, fp32_math_context, resolve_device
from s2d_ray.models.recurrent import ConvRecurrent
from s2d_ray.models.registry import MODELS, create, register_model

__all__ = [
    "MODELS",
    "ConvNet",
    "ConvNet3D",
    "ConvRecurrent",
    "Precision",
    "autocast_context",
    "create",
    "flatten_params",
    "fp32_math_context",
    "functional_forward",
    "param_shapes",
    "register_model",
    "resolve_device",
    "unflatten",
]
