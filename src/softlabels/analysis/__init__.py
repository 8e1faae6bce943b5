"""The paper's science as tools: regularization samples, bias/variance decompositions, experiments."""
from softlabels.analysis.bias_variance import BiasVariance, cross_entropy_bias_variance, mse_bias_variance
from softlabels.analysis.regularization import RegularizationTracker

__all__ = ["BiasVariance", "RegularizationTracker", "cross_entropy_bias_variance", "mse_bias_variance"]
