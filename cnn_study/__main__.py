"""`python -m cnn_study [group=option ...] [key=value ...]`: one run, or a sweep with -m."""

from __future__ import annotations

import logging
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnn_study.config import CONFIG_NAME, CONFIG_PATH
from cnn_study.errors import interruption, user_error
from cnn_study.train import run

log = logging.getLogger("cnn_study")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    """Run one job; return its best validation accuracy (the objective of sweepers)."""
    try:
        results = run(cfg)
    except BaseException as error:
        stopped = interruption(error)
        if stopped is not None:  # also ends a sweep: the user (or the cluster) stopped it
            log.warning(
                "%s: stopped; checkpoints/last.ckpt holds the last completed epoch. Continue "
                "with the same command and resume=true hydra.run.dir=%s",
                stopped, cfg.paths.output_dir,
            )  # fmt: skip
            sys.exit(128 + int(getattr(signal, stopped)))
        if not isinstance(error, Exception):
            raise
        problem = user_error(error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One job must not end a sweep: its results.json records the status and error,
            # its log file the message (and the traceback of a bug); the sweep goes on.
            if problem is None:
                log.exception("job failed")
            else:
                log.error("%s", problem)
            return None  # no objective: Optuna's sweeper marks the trial failed
        if problem is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", problem)  # a user error: one clear message, exit code 2
        sys.exit(2)
    best = results.get("best_val/acc")
    return None if best is None else float(best)


if __name__ == "__main__":
    main()
