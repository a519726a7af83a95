"""`python -m cnn_study [group=option ...] [key=value ...]`: one run, or a sweep with -m."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnn_study.config import CONFIG_NAME, CONFIG_PATH
from cnn_study.errors import user_error
from cnn_study.train import run

log = logging.getLogger("cnn_study")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        # A user error: one clear message. A sweep goes on with its other jobs;
        # a single run exits non-zero (results.json records the error either way).
        log.error("%s", problem)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(2)


if __name__ == "__main__":
    main()
