"""The paper's experiments as resumable functions, one module each; ``softlabels analyze`` is a thin layer.

Each experiment takes an :class:`~softlabels.analysis.base.AnalysisBase` (a validated base config, see
:func:`~softlabels.analysis.base.base_config`) and an output folder. It trains what it needs there with
the engine's resume logic (:mod:`softlabels.analysis.runner`), returns a typed result
(:mod:`softlabels.analysis.results`) and writes it as JSON, CSV and a Markdown table into the same
folder, where ``softlabels report`` finds both the runs and the results.

- :func:`bias_variance_experiment` (:mod:`~softlabels.analysis.width_sweep`) — Yang et al.'s protocol: N
  models on N disjoint stratified splits of the training set, per-sample and mean bias, variance and risk
  of the cross-entropy (Heskes) and the MSE estimate, optionally against model width.
- :func:`temperature_sweep` (:mod:`~softlabels.analysis.temperature_sweep`) — KD at several temperatures:
  regularization-sample fraction per epoch, top-1, and whether the fraction rises with T and accuracy falls
  as it rises (correlations need at least 3 points).
- :func:`filtering_experiment` (:mod:`~softlabels.analysis.filtering`) — KD vs KD with regularization
  samples filtered out vs WSL, same seeds.
- :func:`soft_label_bias_variance` (:mod:`~softlabels.analysis.soft_label_bv`) — CE, KD and WSL students
  over the same splits; per-sample changes of bias and variance on regularization samples and the others.

The training pool is the base config's training set after ``data.train_subset`` (drawn with the base
``seed``). Split runs use no validation split; they are evaluated with their final weights (``last.pt``),
never with an epoch chosen on the test set. The temperature sweep and the filtering experiment answer with
last-epoch top-1 for the same reason.

Adding an analysis: a module with a function ``(base, out, ...) -> Result`` (a pydantic model in
:mod:`~softlabels.analysis.results` with its own ``analysis`` name), ``write_outputs(result, out)`` and
``markdown(result)``, a subcommand in :mod:`~softlabels.analysis.commands`, and a figure in
:mod:`softlabels.report.analysis_plots`.
"""
from __future__ import annotations

from softlabels.analysis.base import AnalysisBase, base_config
from softlabels.analysis.checks import AnalysisError
from softlabels.analysis.filtering import FILTERING_ARMS, filtering_experiment
from softlabels.analysis.soft_label_bv import soft_label_bias_variance
from softlabels.analysis.teachers import resolve_teacher
from softlabels.analysis.temperature_sweep import temperature_sweep
from softlabels.analysis.width_sweep import bias_variance_experiment

__all__ = [
    "FILTERING_ARMS", "AnalysisBase", "AnalysisError", "base_config", "bias_variance_experiment",
    "filtering_experiment", "resolve_teacher", "soft_label_bias_variance", "temperature_sweep",
]
