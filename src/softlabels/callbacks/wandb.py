"""Weights & Biases logger (``loggers: [{name: wandb, project: ..., mode: offline}]``).

Needs ``pip install 'softlabels[wandb]'``. One W&B run per softlabels run: the resolved config as
the run config, every scalar of the epoch record at step = epoch (names in
:mod:`softlabels.callbacks.tracking`), the WSL weight histogram as a ``wandb.Histogram``, and the
best epoch in the run summary. Files go to ``<run folder>/wandb`` (or ``dir``). ``mode: offline``
(or ``WANDB_MODE=offline``) never touches the network; upload later with ``wandb sync``. The
W&B run id is kept in ``<run folder>/wandb_run.json`` so a resumed run continues the same W&B run.
W&B's console capture is off: the console text is in ``train.log``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from softlabels import io
from softlabels.callbacks.base import Callback, CallbackParams, register_logger
from softlabels.callbacks.tracking import epoch_histograms, first_line, require, trainer_scalars
from softlabels.errors import UserError

ID_FILE = "wandb_run.json"


class WandbParams(CallbackParams):
    project: str = "softlabels"
    entity: str | None = None
    name: str | None = None
    """W&B run name; default the experiment name."""
    group: str | None = None
    tags: list[str] = []
    notes: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None
    """None: W&B's own choice (``WANDB_MODE``, else online)."""
    dir: str | None = None
    """Where W&B writes its files; default the run folder."""


@register_logger("wandb")
class WandbLogger(Callback):
    """Epoch scalars, the WSL weight histogram and the config to a W&B run (main process only)."""

    order = 200
    Params = WandbParams

    def __init__(self, params: WandbParams | None = None) -> None:
        super().__init__(params)
        require("wandb", logger="wandb", extra="wandb")
        self.run = None

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        import wandb

        p, folder = self.params, Path(trainer.run_dir.path)
        id_path = folder / ID_FILE
        run_id = io.read_json(id_path, "W&B run id file")["id"] if id_path.is_file() else None
        try:
            self.run = wandb.init(
                project=p.project, entity=p.entity, name=p.name or trainer.exp.name, group=p.group,
                tags=p.tags or None, notes=p.notes, mode=p.mode, dir=p.dir or str(folder),
                config=trainer.exp.model_dump(mode="json"), id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(console="off"),
            )
        except Exception as exc:  # not logged in, no network, bad entity/project: a user's problem, one line
            raise UserError(f"logger 'wandb' could not start a W&B run: {first_line(exc)}; run `wandb login`, "
                            "or use mode: offline (or WANDB_MODE=offline)") from None
        if run_id is None:
            io.write_json(id_path, {"id": self.run.id})

    def on_epoch_end(self, trainer, record: dict) -> None:
        if self.run is None:
            return
        import wandb

        data: dict = trainer_scalars(trainer, record)
        for tag, (counts, edges) in epoch_histograms(record).items():
            data[tag] = wandb.Histogram(np_histogram=(counts, edges))
        self.run.log(data, step=int(record["epoch"]))

    def on_fit_end(self, trainer, summary: dict) -> None:
        if self.run is None:
            return
        for key in ("best_epoch", "best_top1", "best_top5", "best_selected_by", "last_top1", "wall_time_s"):
            if summary.get(key) is not None:
                self.run.summary[key] = summary[key]
        self.run.finish()
        self.run = None

    def on_exception(self, trainer, exc: BaseException) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None
