"""MLflow: figures as artifacts of the run (folder `figures`)."""

from __future__ import annotations

from pathlib import Path

from cnn_study.loggers import LoggerOutput

LOGGER = "lightning.pytorch.loggers.MLFlowLogger"


class Output(LoggerOutput):
    def figure(self, path: Path, name: str, step: int) -> None:
        self.logger.experiment.log_artifact(self.logger.run_id, str(path), artifact_path="figures")
