"""Studies as data: a study file (parts, seeds, claims, scales), the runner that makes it
one Hydra multirun, the membership of runs, the evidence and the report."""

from cnn_study import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Study": "definition",
    "read_study": "definition",
    "study_path": "definition",
    "ErrorControl": "evidence",
    "judge_all": "evidence",
    "run_rounds": "looks",
    "write_report": "report",
    "write_report_from_runs": "report",
    "StudyRun": "sweeper",
})  # fmt: skip
