"""Callbacks: the Trainer's built-in jobs (tracker, metric files, checkpoints, console) and the user's.

One file per callback; each registers itself with ``@register_callback`` / ``@register_logger``
(see ``base.py`` for the events and their order).
"""
from softlabels.callbacks.base import (
    CALLBACKS,
    LOGGERS,
    Callback,
    CallbackParams,
    build_callbacks,
    list_callbacks,
    register_callback,
    register_logger,
    sort_callbacks,
)

__all__ = ["CALLBACKS", "LOGGERS", "Callback", "CallbackParams", "build_callbacks", "list_callbacks",
           "register_callback", "register_logger", "sort_callbacks"]
