"""Experiment configs: one YAML file per experiment, validated before anything trains.

``load_config(path, overrides)`` reads the file with ``yaml.safe_load`` (:func:`read_yaml`), applies
dotted overrides (``optim.lr=0.1``) and validates the result once: ``exp.data`` is the dataset's own
config class, ``exp.method.params`` the method's ``Params``. Errors are one-line :class:`ConfigError`
messages naming the file and the key. ``python -m softlabels.config.docs`` writes docs/configs.md.
"""
from softlabels.config.experiment import (
    Experiment,
    InfoDropConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
    TeacherConfig,
)
from softlabels.config.loading import (
    apply_overrides,
    load_config,
    method_params,
    parse_override,
    read_yaml,
    to_yaml,
    validate_config,
)
from softlabels.data.base import DataConfig, DatasetTraits
from softlabels.data.synthetic import SyntheticConfig, SyntheticDataConfig

__all__ = [
    "DataConfig",
    "DatasetTraits",
    "Experiment",
    "InfoDropConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "SyntheticDataConfig",
    "TeacherConfig",
    "apply_overrides",
    "load_config",
    "method_params",
    "parse_override",
    "read_yaml",
    "to_yaml",
    "validate_config",
]
