"""MLflow logger (``loggers: [mlflow]``; needs ``pip install 'softlabels[mlflow]'``).

One MLflow run per softlabels run, written through ``MlflowClient`` (no global active run is
touched): the resolved config as parameters (dotted keys), every scalar of the epoch record at
step = epoch (names in :mod:`softlabels.callbacks.tracking`), the WSL weight histogram as a JSON
artifact per epoch (``wsl_weight_hist/epoch_NNNN.json``), and the run status (FINISHED, FAILED,
KILLED on Ctrl-C). Default store: ``sqlite:///<run folder>/mlflow.db``, a local file that needs
no server (MLflow 3 refuses its older ``file:`` folder store unless ``MLFLOW_ALLOW_FILE_STORE=true``);
set ``tracking_uri`` for a server or a shared database. View with
``mlflow ui --backend-store-uri sqlite:///<run folder>/mlflow.db``. The MLflow run id is kept in
``<run folder>/mlflow_run.json`` so a resumed run continues the same MLflow run.
"""
from __future__ import annotations

import time
from pathlib import Path

from softlabels import io
from softlabels.callbacks.base import Callback, CallbackParams, register_logger
from softlabels.callbacks.tracking import epoch_histograms, first_line, flat_config, require, trainer_scalars
from softlabels.errors import UserError

ID_FILE = "mlflow_run.json"
_BATCH = 100  # MLflow's per-request limit on parameters


class MlflowParams(CallbackParams):
    tracking_uri: str | None = None
    """Default ``sqlite:///<run folder>/mlflow.db``."""
    experiment_name: str = "softlabels"
    run_name: str | None = None
    """Default the experiment (softlabels run) name."""
    tags: dict[str, str] = {}
    log_config: bool = True
    """Log the resolved config as parameters."""


@register_logger("mlflow")
class MlflowLogger(Callback):
    """Epoch scalars, config parameters and run status to MLflow (main process only)."""

    order = 200
    Params = MlflowParams

    def __init__(self, params: MlflowParams | None = None) -> None:
        super().__init__(params)
        require("mlflow", logger="mlflow", extra="mlflow")
        self.client = None
        self.run_id: str | None = None

    def tracking_uri(self, trainer) -> str:
        return self.params.tracking_uri or f"sqlite:///{Path(trainer.run_dir.path).resolve()}/mlflow.db"

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri(trainer)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._open_run(trainer, uri)
        except Exception as exc:  # unreachable server, bad URI, refused store: a user's problem, one line
            self.client = None
            raise UserError(f"logger 'mlflow' could not start an MLflow run at {uri}: {first_line(exc)}; "
                            "check the logger's tracking_uri") from None

    def _open_run(self, trainer, uri: str) -> str:
        """The run id kept in mlflow_run.json (a resumed run), or a new run with the config as parameters."""
        from mlflow.entities import Param

        p, folder = self.params, Path(trainer.run_dir.path)
        id_path = folder / ID_FILE
        if id_path.is_file():
            run_id = io.read_json(id_path, "MLflow run id file")["id"]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        experiment = self.client.get_experiment_by_name(p.experiment_name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # the default store keeps its artifacts beside it, not in the working directory
            location = None if p.tracking_uri else (folder / "mlartifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(p.experiment_name, artifact_location=location)
        run_id = self.client.create_run(experiment_id, run_name=p.run_name or trainer.exp.name,
                                        tags=dict(p.tags)).info.run_id
        io.write_json(id_path, {"id": run_id, "tracking_uri": uri})
        if p.log_config:
            params = [Param(k, v[:6000]) for k, v in flat_config(trainer.exp.model_dump(mode="json")).items()]
            for i in range(0, len(params), _BATCH):
                self.client.log_batch(run_id, params=params[i : i + _BATCH])
        return run_id

    def on_epoch_end(self, trainer, record: dict) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        step, now = int(record["epoch"]), int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, value in trainer_scalars(trainer, record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        for tag, (counts, edges) in epoch_histograms(record).items():
            self.client.log_dict(self.run_id, {"epoch": step, "counts": counts, "bin_edges": edges},
                                 f"{tag.replace('/', '_')}_hist/epoch_{step:04d}.json")

    def _end(self, status: str) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None

    def on_fit_end(self, trainer, summary: dict) -> None:
        self._end("FINISHED")

    def on_exception(self, trainer, exc: BaseException) -> None:
        self._end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
