"""The paper's science as tools: regularization samples and bias/variance."""
from softlabels.analysis.regularization import RegularizationTracker

__all__ = ["RegularizationTracker"]
