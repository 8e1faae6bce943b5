"""Reproduction plans: teachers, pairs, method rows over seeds, selection on val, results from logs.

``softlabels reproduce PLAN`` runs a plan (resumable); ``--collect`` rebuilds its results JSON and
markdown from the run folders alone.
"""
from softlabels.reproduce.plan import Plan, load_plan, parse_plan

__all__ = ["Plan", "load_plan", "parse_plan"]
