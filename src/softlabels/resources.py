"""Files shipped inside the package: configs and assets, usable from any working directory.

* ``softlabels:REL`` names a file under the package's ``assets/`` folder, e.g.
  ``softlabels:teachers/fashion_mnist_resnet20.pt``; :func:`resolve_path` turns it (or a plain path) into a
  filesystem :class:`~pathlib.Path`. Runs record the string as written plus the file's sha256.
* ``torchvision:ResNet34_Weights.IMAGENET1K_V1`` names torchvision's published weights: the file in the torch
  hub cache, downloaded there on first use (the ImageNet teachers of the WSL recipe).
* A config argument that is not an existing file is looked up among the shipped configs:
  ``fashion_mnist/wsl`` -> ``<package>/configs/fashion_mnist/wsl.yaml`` (:func:`find_config`).
"""
from __future__ import annotations

from importlib import resources as _importlib_resources
from pathlib import Path

from softlabels.errors import ConfigError, UserError

PREFIX = "softlabels:"
#: ``torchvision:ResNet34_Weights.IMAGENET1K_V1`` names torchvision's published weights (teacher.checkpoint).
TORCHVISION_PREFIX = "torchvision:"

__all__ = ["PREFIX", "assets_root", "configs_root", "find_config", "is_resource", "list_configs", "resolve_path"]


def _package_root() -> Path:
    return Path(str(_importlib_resources.files("softlabels")))


def assets_root() -> Path:
    """The package's ``assets/`` folder (shipped teachers and their logs)."""
    return _package_root() / "assets"


def configs_root() -> Path:
    """The package's ``configs/`` folder (the repository's ``configs`` is a link to it)."""
    return _package_root() / "configs"


def is_resource(text: str | Path) -> bool:
    """True for strings of the form ``softlabels:REL``."""
    return isinstance(text, str) and text.startswith(PREFIX)


def resolve_path(text: str | Path) -> Path:
    """``softlabels:REL`` -> ``<package>/assets/REL``; ``torchvision:WEIGHTS`` -> the weights' file in the torch
    hub cache (see :func:`torchvision_weights_path`); anything else -> ``Path(text)`` unchanged.

    Raises:
        UserError: ``REL`` is empty, absolute or climbs out of ``assets/`` with ``..``; unknown torchvision
            weights, or weights neither cached nor downloadable.
    """
    if isinstance(text, str) and text.startswith(TORCHVISION_PREFIX):
        return torchvision_weights_path(text[len(TORCHVISION_PREFIX):])
    if not is_resource(text):
        return Path(text)
    rel = str(text)[len(PREFIX):]
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise UserError(f"package resource {text!r} must name a file inside the package assets, e.g. "
                        f"{PREFIX}teachers/fashion_mnist_resnet20.pt")
    return assets_root().joinpath(*parts)


def torchvision_weights_path(weights: str, *, download: bool = True) -> Path:
    """The file of torchvision weights ``weights`` in ``$TORCH_HOME/hub/checkpoints``.

    ``weights``: torchvision's enum spelling ``ResNet34_Weights.IMAGENET1K_V1`` or ``resnet34.IMAGENET1K_V1``
    (model name, then the weight name; ``DEFAULT`` allowed). A file missing from the cache is downloaded
    there (hash-checked by torch.hub) when ``download``; without network that is a one-line UserError
    saying which file to place where. The file is a plain state dict, read later with ``weights_only=True``.
    """
    import os
    from urllib.parse import urlparse

    import torch
    import torchvision

    head, _, tail = weights.rpartition(".")
    try:
        if head in torchvision.models.list_models(module=torchvision.models):
            enum = torchvision.models.get_model_weights(head)[tail]
        else:
            enum = torchvision.models.get_weight(weights)
    except (KeyError, ValueError, AttributeError):
        raise UserError(f"unknown torchvision weights {weights!r}; write e.g. torchvision:ResNet34_Weights.IMAGENET1K_V1 "
                        "or torchvision:resnet34.IMAGENET1K_V1 (`softlabels list models` shows the weight names)") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)
    if not path.is_file() and download:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(enum.url, str(path), hash_prefix=path.stem.rsplit("-", 1)[-1],
                                           progress=False)
        except Exception as exc:
            raise UserError(f"torchvision weights {weights}: {path} is not cached and {enum.url} cannot be downloaded "
                            f"({type(exc).__name__}); place the file there (or set TORCH_HOME)") from None
    return path


def list_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``fashion_mnist/wsl`` (relative path without ``.yaml``), sorted."""
    root = configs_root()
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(name: str | Path) -> Path:
    """The config file ``name`` names: an existing file as given, else a shipped config.

    ``fashion_mnist/wsl``, ``fashion_mnist/wsl.yaml``, ``configs/fashion_mnist/wsl.yaml`` and
    ``softlabels:configs/fashion_mnist/wsl.yaml`` all resolve to the shipped file when no such file
    exists relative to the working directory.

    Raises:
        ConfigError: neither a file nor a shipped config (the message lists close shipped names).
    """
    path = Path(name)
    if not is_resource(name) and path.is_file():
        return path
    rel = str(name)[len(PREFIX):] if is_resource(name) else path.as_posix()
    rel = rel.removeprefix("configs/")
    if not rel.endswith((".yaml", ".yml")):
        rel += ".yaml"
    parts = Path(rel).parts
    candidate = configs_root().joinpath(*parts) if parts and ".." not in parts and not Path(rel).is_absolute() else None
    if candidate is not None and candidate.is_file():
        return candidate
    stem = Path(rel).with_suffix("").as_posix()
    close = [c for c in list_configs() if stem.split("/")[-1] in c][:8]
    hint = f"; shipped configs with that name: {', '.join(close)}" if close else "; see `softlabels list configs`"
    raise ConfigError(f"config file not found: {name} (neither a file nor a shipped config{hint})")
