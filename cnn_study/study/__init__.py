"""Studies as data: a study file (parts, seeds, claims, scales), the runner that makes it
one Hydra multirun, the membership of runs, the evidence and the report."""
