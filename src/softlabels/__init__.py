"""softlabels: knowledge distillation built around Weighted Soft Labels and the bias-variance view.

Public API::

    from softlabels import losses, create_model, list_models, list_methods, load_config, train
"""
__version__ = "0.1.0"

from softlabels import losses  # noqa: E402
from softlabels.callbacks.base import Callback  # noqa: E402
from softlabels.config import Experiment, load_config  # noqa: E402
from softlabels.methods import get_method, list_methods  # noqa: E402
from softlabels.models import create_model, list_models  # noqa: E402


def train(exp, *args, **kwargs):
    """Run one experiment (see :func:`softlabels.engine.train`).

    A new run records in its ``config.yaml`` (``imports``) the non-softlabels modules that registered its
    models, dataset, method and callbacks, so ``softlabels eval`` / ``train --resume`` find them again.
    """
    from softlabels.engine import train as _train

    if kwargs.get("resume_dir") is None:
        from softlabels.plugins import with_recorded_imports

        exp = with_recorded_imports(exp)
    return _train(exp, *args, **kwargs)


def __getattr__(name: str):
    if name == "RunDir":  # lazy: the engine imports torch-heavy modules
        from softlabels.engine.run_dir import RunDir

        return RunDir
    raise AttributeError(f"module 'softlabels' has no attribute {name!r}")


__all__ = [
    "Callback",
    "Experiment",
    "RunDir",
    "__version__",
    "create_model",
    "get_method",
    "list_methods",
    "list_models",
    "load_config",
    "losses",
    "train",
]
