"""Where the runs of a reproduction plan execute: Ray tasks or SLURM jobs (through submitit).

``softlabels reproduce --jobs N`` keeps its local process pool (``runner.run_all``); the executors here hand
each unfinished run to an existing engine instead. Every run is one task/job that trains (or resumes) the run
with the same function as the local pool and writes its run folder as before; the driver only collects the
small result dicts and logs them. Finished runs are filtered out by the runner before anything is submitted.

The workers must see the same files as the driver: the driver's working folder (relative paths in the plan)
and the plan's output folder. On one machine this always holds; on a cluster use a shared file system.

- :class:`RayExecutor`: ``address`` of a running cluster (``"auto"`` or ``"ray://host:10001"``), or ``None``
  to start a local one for the duration of the plan; each run is one Ray task requesting ``cpus_per_run``
  CPUs and ``gpus_per_run`` GPUs (Ray then sets CUDA_VISIBLE_DEVICES for it).
- :class:`SubmititExecutor`: submitit's ``AutoExecutor`` (SLURM when ``sbatch`` is available; ``cluster="local"``
  runs the jobs as local processes, which is how it is tested); all runs of a stage go in one job array.

Both are optional extras: ``pip install 'softlabels[ray]'`` / ``pip install 'softlabels[submitit]'``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from softlabels.errors import ConfigError

Log = Callable[[str], None]
EXECUTORS = ("local", "ray", "submitit")


def train_in_worker(config: dict, label: str, cwd: str, threads: int) -> dict:
    """Train (or resume, or skip) one run inside a Ray task or a SLURM job; never raises.

    ``cwd`` is the driver's working folder (relative paths of the plan resolve against it), ``threads``
    the CPU request of the run (torch's intra-op threads).
    """
    if not Path(cwd).is_dir():
        return {"ok": False, "seconds": 0.0, "error": f"the driver's working folder {cwd} does not exist on this "
                f"node ({os.uname().nodename}); run the plan from a folder on a file system shared by all nodes"}
    os.chdir(cwd)
    import torch

    from softlabels.reproduce.runner import _train_one

    torch.set_num_threads(max(1, int(threads)))
    result = _train_one(config, label)
    result["node"] = os.uname().nodename
    return result


def _failure(exc: BaseException) -> dict:
    """A result for a task/job that died outside ``train_in_worker`` (worker crash, scheduler kill)."""
    lines = str(exc).strip().splitlines()
    return {"ok": False, "seconds": 0.0, "error": f"{type(exc).__name__}: {lines[-1] if lines else ''}"}


class RayExecutor:
    """Each run one Ray task (``cpus_per_run`` CPUs, ``gpus_per_run`` GPUs) on the cluster at ``address``.

    ``address=None`` starts a local cluster with ``local_cpus`` CPUs (default: all) for the plan and stops it
    at the end; a cluster that was already connected in this process (``ray.is_initialized()``) is used as is.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 local_cpus: int | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'softlabels[ray]'") from None
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise ConfigError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0 (got {cpus_per_run}, {gpus_per_run})")
        self.address, self.cpus, self.gpus, self.local_cpus = address, cpus_per_run, gpus_per_run, local_cpus

    def _connect(self, log: Log) -> bool:
        """Connect (or start a local cluster); returns whether this executor must shut Ray down at the end."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:  # an existing cluster (or Ray Client at ray://): its own settings apply
            ray.init(address=self.address)
        else:
            ray.init(num_cpus=self.local_cpus or os.cpu_count(), object_store_memory=200 * 2**20,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        res = ray.cluster_resources()
        log(f"ray: {'cluster at ' + self.address if self.address else 'local cluster'} with "
            f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; each run asks {self.cpus:g} CPUs, "
            f"{self.gpus:g} GPUs")
        if res.get("CPU", 0) < self.cpus or res.get("GPU", 0) < self.gpus:
            ray.shutdown()  # connected (or started) here: leave nothing behind
            raise ConfigError(f"ray: no node can hold a run asking {self.cpus:g} CPUs and {self.gpus:g} GPUs "
                              f"(cluster: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs); "
                              "lower --cpus-per-run/--gpus-per-run")
        return True

    def run(self, specs: list, log: Log) -> Iterator[tuple[Any, dict]]:
        """Submit every spec as a task; yield (spec, result) as tasks finish."""
        import ray

        owned = self._connect(log)
        try:
            task = ray.remote(train_in_worker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
            threads = max(1, int(self.cpus))
            refs = {task.remote(s.config, s.label, os.getcwd(), threads): s for s in specs}
            log(f"{len(refs)} runs submitted as Ray tasks")
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed run, recorded
                        result = _failure(exc)
                    yield refs[ref], result
        finally:
            if owned:
                ray.shutdown()


class SubmititExecutor:
    """All runs of a stage as one submitit job array (SLURM, or local processes with ``cluster="local"``).

    ``folder`` keeps submitit's logs and pickles (one sub-folder per job); ``slurm`` holds extra SLURM
    parameters (``partition``, ``account``, ...). ``timeout_min`` is each job's time limit.
    """

    name = "submitit"

    def __init__(self, folder: str | Path, cluster: str | None = None, cpus_per_run: int = 1,
                 gpus_per_run: int = 0, timeout_min: int = 240, slurm: dict | None = None,
                 poll_s: float = 5.0) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("--executor submitit needs submitit: pip install 'softlabels[submitit]'") from None
        if cpus_per_run < 1 or gpus_per_run < 0:
            raise ConfigError(f"--cpus-per-run must be >= 1 and --gpus-per-run >= 0 (got {cpus_per_run}, {gpus_per_run})")
        self.folder, self.cluster = Path(folder), cluster
        self.cpus, self.gpus, self.timeout_min = int(cpus_per_run), int(gpus_per_run), int(timeout_min)
        self.slurm, self.poll_s = dict(slurm or {}), poll_s

    def run(self, specs: list, log: Log) -> Iterator[tuple[Any, dict]]:
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "gpus_per_node": self.gpus,
                                  "name": "softlabels-reproduce"}
        if executor.cluster != "local":  # the local executor takes no CPU request (it runs plain processes)
            params["cpus_per_task"] = self.cpus
        params.update({f"slurm_{k}": v for k, v in self.slurm.items()} if executor.cluster == "slurm" else {})
        executor.update_parameters(**params)
        cwd = os.getcwd()
        with executor.batch():
            jobs = [executor.submit(train_in_worker, s.config, s.label, cwd, self.cpus) for s in specs]
        by_job = dict(zip(jobs, specs))
        log(f"{len(jobs)} runs submitted to {executor.cluster} (submitit, logs in {self.folder})")
        for job in submitit.helpers.as_completed(jobs, poll_frequency=self.poll_s):
            try:
                result = job.result()
            except Exception as exc:  # noqa: BLE001 - a job killed by the scheduler is one failed run, recorded
                result = _failure(exc)
            result.setdefault("job_id", job.job_id)
            yield by_job[job], result


def make_executor(name: str, *, output_dir: str | Path, address: str | None = None, cpus_per_run: float = 1,
                  gpus_per_run: float = 0, timeout_min: int = 240, slurm: dict | None = None,
                  submitit_cluster: str | None = None):
    """The executor named ``name`` (``local`` gives None: the runner's own process pool)."""
    if name == "local":
        return None
    if name == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run)
    if name == "submitit":
        if cpus_per_run != int(cpus_per_run) or gpus_per_run != int(gpus_per_run):
            raise ConfigError("--executor submitit: --cpus-per-run and --gpus-per-run must be whole numbers")
        return SubmititExecutor(Path(output_dir) / "submitit", submitit_cluster, int(cpus_per_run), int(gpus_per_run),
                                timeout_min, slurm)
    raise ConfigError(f"--executor {name}: unknown; choose one of {', '.join(EXECUTORS)}")
