"""logger=mlflow: a real local MLflow store, read back with MLflow's own client."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn_study import schema
from cnn_study.errors import CnnStudyError
from cnn_study.train import run
from tests.conftest import ComposeFn


def test_mlflow_store_holds_params_metrics_and_figures(compose_cfg: ComposeFn) -> None:
    mlflow = pytest.importorskip("mlflow")
    cfg = compose_cfg("data=fake", "logger=[tensorboard,mlflow]", "trainer.max_epochs=2",
                      "~callbacks.gradcam")  # fmt: skip
    results = run(cfg)
    client = mlflow.tracking.MlflowClient(cfg.logger.mlflow.tracking_uri)
    (found,) = client.search_runs(
        [client.get_experiment_by_name("cnn_study").experiment_id],
        filter_string=f"tags.output_dir = '{cfg.paths.output_dir}'",
    )
    assert found.info.status == "FINISHED"
    assert found.data.params["arch/_target_"] == "cnn_study.models.cnn.build_cnn"
    history = client.get_metric_history(found.info.run_id, "val/acc")
    assert len(history) == 2  # one point per epoch
    assert max(m.value for m in history) == pytest.approx(results["best_val/acc"])
    assert found.data.metrics["test/acc"] == pytest.approx(results["test/acc"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id, "figures")}
    assert "figures/test_confusion.png" in artifacts and "figures/curves.png" in artifacts
    store = Path(cfg.paths.output_root)
    assert (store / "mlflow.db").is_file() and not Path("mlruns").exists()


def test_mlflow_missing_names_the_extra(compose_cfg: ComposeFn, monkeypatch) -> None:
    real = schema.importlib.util.find_spec
    monkeypatch.setattr(schema.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))  # fmt: skip
    with pytest.raises(CnnStudyError, match=r"pip install 'cnn_study\[mlflow\]'"):
        run(compose_cfg("data=fake", "logger=mlflow", "debug=limit"))
