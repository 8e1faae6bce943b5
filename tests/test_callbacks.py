"""The callback contract: registry, options, build from config entries."""
import pytest

import softlabels
from softlabels.callbacks import Callback, CallbackParams, build_callbacks, register_callback, sort_callbacks
from softlabels.errors import ConfigError


class _EveryNParams(CallbackParams):
    every: int = 1


@register_callback("test_every_n")
class _EveryN(Callback):
    Params = _EveryNParams
    order = 50


def test_public_names():
    assert softlabels.Callback is Callback
    from softlabels.engine.run_dir import RunDir

    assert softlabels.RunDir is RunDir


def test_build_callbacks_from_names_options_and_instances():
    mine = Callback()
    built = build_callbacks(["test_every_n", {"name": "test_every_n", "every": 3}, mine])
    assert [type(c) for c in built] == [_EveryN, _EveryN, Callback]
    assert built[0].params.every == 1 and built[1].params.every == 3 and built[2] is mine
    assert sort_callbacks(built) == [built[0], built[1], mine]  # order 50 before the default 100


def test_build_callbacks_errors_name_the_entry():
    with pytest.raises(ConfigError, match=r"callbacks\[0\]: unknown callback 'nope'"):
        build_callbacks(["nope"])
    with pytest.raises(ConfigError, match=r"callbacks\[1\] \(test_every_n\): every"):
        build_callbacks(["test_every_n", {"name": "test_every_n", "every": "x"}])
    with pytest.raises(ConfigError, match=r"callbacks\[0\] \(test_every_n\): typo"):
        build_callbacks([{"name": "test_every_n", "typo": 1}])
    with pytest.raises(ConfigError, match=r"loggers\[0\]: unknown logger"):
        build_callbacks(["test_every_n"], kind="logger")
