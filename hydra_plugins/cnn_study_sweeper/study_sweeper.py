"""`hydra/sweeper=cnn_study`: runs the study saved at `hydra.sweeper.study` through the
configured launcher (`python -m cnn_study.study` sets it up; see `cnn_study.study.sweeper`)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class StudySweeperConf:
    _target_: str = "hydra_plugins.cnn_study_sweeper.study_sweeper.StudySweeper"
    study: str = MISSING  # the study.yaml in the study folder
    # An experiment may name its own sweep (B5: three backbones) for a plain multirun;
    # a study's jobs are its parts x seeds, each naming its values, so it is not swept here.
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="cnn_study", node=StudySweeperConf, provider="cnn_study"
)


class StudySweeper(Sweeper):
    def __init__(self, study: str, params: dict[str, str] | None = None) -> None:
        self.study_file = Path(study)  # `params` is an experiment's own sweep: not used

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.job_index = 0

    def launch(self, batch: list[list[str]]) -> Any:
        returns = self.launcher.launch(batch, initial_job_idx=self.job_index)
        self.job_index += len(batch)
        return returns

    def sweep(self, arguments: list[str]) -> Any:
        from cnn_study.errors import CnnStudyError
        from cnn_study.study.definition import read_study
        from cnn_study.study.sweeper import StudyRun

        if arguments:
            raise CnnStudyError(
                f"hydra/sweeper=cnn_study takes its jobs from {self.study_file}; give "
                f"overrides for every job to python -m cnn_study.study (not {arguments})"
            )
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, folder / "multirun.yaml")
        return StudyRun(read_study(self.study_file), folder, self.launch).run()
