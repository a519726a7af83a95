"""Bad input gives one clear message and a non-zero exit code, never a silent mistake."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from cnn_study.data.image_folder import ImageFolderDataModule
from cnn_study.errors import CnnStudyError, user_error
from cnn_study.finetune import Finetune, train_all
from cnn_study.models.cnn import build_cnn
from cnn_study.train import run
from tests.conftest import write_class_tree
from tests.test_image_folder import module
from tests.test_train import cli

QUICK = ("data=fake", "trainer.fast_dev_run=true")


def failed_clearly(result, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in output, (fragment, output[-2000:])


def user_experiment(tmp_path: Path, body: str) -> str:
    folder = tmp_path / "configs" / "experiment"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("# @package _global_\n" + body)
    return f"hydra.searchpath=[file://{tmp_path / 'configs'}]"


def config_error(compose_cfg, *overrides: str) -> str:
    """The one message a config gets before any data is read: from Hydra's composition
    (unknown keys, schema types) or from the run's checks (target signatures, ranges)."""
    try:
        cfg = compose_cfg(*overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return f"{error} {error.__cause__ or ''}"  # what the command line prints
    with pytest.raises(CnnStudyError) as raised:
        run(cfg)
    return str(raised.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("regularization:\n  dropuot: 0.5\n", "Key 'dropuot' not in 'RegularizationSchema'"),
        ("seeed: 3\n", "Key 'seeed' not in 'RunSchema'"),
        ("optimizer:\n  weight_decya: 0.1\n", "did you mean 'weight_decay'"),
        ("trainer:\n  max_epoch: 3\n", "did you mean 'max_epochs'"),
    ],
)
def test_typo_inside_a_yaml_file_is_an_error(compose_cfg, body: str, fragment: str, tmp_path):
    search_path = user_experiment(tmp_path, body)
    assert fragment in config_error(compose_cfg, "data=fake", "experiment=mine", search_path)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("trainer.max_epoch=3", "Key 'max_epoch' is not in struct"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected int or null"),
        ("regularization.dropout=abc", "regularization.dropout"),
        ("trainer.precision=17", "trainer.precision=17: expected"),
        ("data.batch_size=big", "data.batch_size='big': expected int"),
    ],
)
def test_command_line_typos_and_types(compose_cfg, override: str, fragment: str) -> None:
    assert fragment in config_error(compose_cfg, "data=fake", override)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (("experiment=mine",), "Key 'seeed' not in 'RunSchema'"),  # Hydra's own error
        (("trainer.max_epochs=abc",), "trainer.max_epochs='abc': must be an integer ≥ 1"),
    ],
)
def test_the_command_line_says_it_in_one_message(tmp_path: Path, arguments, fragment) -> None:
    """The same errors through `python -m cnn_study`: the message, no traceback, exit 2."""
    search_path = user_experiment(tmp_path, "seeed: 3\n")
    result = cli(*QUICK, *arguments, search_path, f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path)  # fmt: skip
    failed_clearly(result, fragment)
    assert result.returncode == 2


@pytest.mark.parametrize("override", ["trainer.max_epochs=abc", "optimizer.lr=-1"])
def test_full_error_shows_the_traceback(tmp_path: Path, override: str) -> None:
    """Both error paths: a type error (found after torch is imported) and a range error
    (found before): HYDRA_FULL_ERROR=1 gives the traceback (the range error once did not)."""
    result = cli(*QUICK, override, f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert result.returncode != 0 and "Traceback" in result.stderr
    if override.startswith("optimizer"):  # refused before the run: no folder left
        assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_class_count_without_a_new_head(tmp_path: Path) -> None:
    weights = tmp_path / "ten_classes.pt"
    torch.save(build_cnn(10, [8, 16], 32, 32).state_dict(), weights)
    network = build_cnn(3, [8, 16], 32, 32)
    with pytest.raises(CnnStudyError, match=r"another class count.*finetune.new_head=true"):
        Finetune(train_all, from_checkpoint=str(weights), new_head=False)(network)
    loaded = Finetune(train_all, from_checkpoint=str(weights))(build_cnn(3, [8, 16], 32, 32))
    assert loaded(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_decompression_bomb_is_refused_by_name(tmp_path: Path, monkeypatch, caplog) -> None:
    root = tmp_path / "data"
    write_class_tree(root, ["a", "b"], per_class=10, seed=0)
    Image.new("RGB", (400, 400)).save(root / "a" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 160,000 px > 2 × the limit
    dm = module(root, tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert "skipped 1 " in caplog.text
    assert (
        "huge.png (decompression bomb, more pixels than twice PIL's limit of 40,000)" in caplog.text
    )
    s = dm.splits
    assert len(s.train_labels) + len(s.val_labels) + len(s.test_labels) == 20


def test_nondeterministic_cuda_operation_becomes_a_clear_message() -> None:
    # What torch raises on CUDA under deterministic=true (no GPU in CI: the message itself).
    error = RuntimeError(
        "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but "
        "you set 'torch.use_deterministic_algorithms(True)'."
    )
    problem = user_error(error)
    assert problem is not None
    assert "adaptive_avg_pool2d_backward_cuda has no deterministic CUDA" in str(problem)
    assert "trainer.deterministic=warn" in str(problem)
    assert user_error(RuntimeError("CUDA out of memory")) is None


class NoData:
    """A DataModule that must never be built: range checks come before any data is read."""

    def __init__(self, **_: object) -> None:
        raise AssertionError("data was read before the numbers were checked")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0: must be an integer ≥ 1"),
        ("data.batch_size=-1", "data.batch_size=-1: must be an integer ≥ 1"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0: must be an integer ≥ 1"),
        ("optimizer.lr=-1", "optimizer.lr=-1: must be a number > 0"),
        ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be an integer ≥ 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: must be an integer ≥ 1"),
        ("regularization.dropout=1.5", "regularization.dropout=1.5: must be a number in [0, 1)"),
        ("regularization.weight_decay=-0.1",
         "regularization.weight_decay=-0.1: must be a number ≥ 0"),
        ("scheduler=step scheduler.schedule.step_size=0",
         "scheduler.schedule.step_size=0: must be an integer ≥ 1"),
        ("augmentation=crop_flip_jitter augmentation.flip.p=2",
         "augmentation.flip.p=2: must be a number in [0, 1]"),
        ("arch=gap4 arch.input_size=32",
         "arch.input_size=32: 4 conv blocks with padding 0 need at least 46 px"),
        ("data=image_folder data.root=x data.val_fraction=0.5 data.test_fraction=0.5",
         "data.val_fraction + data.test_fraction = 1: must be below 1 (the rest trains)"),
        ("data=image_folder data.root=x data.val_fraction=0",
         "data.val_fraction=0: must be a number in (0, 1)"),
    ],
)  # fmt: skip
def test_numbers_out_of_range_stop_the_run_before_any_data(compose_cfg, override, message) -> None:
    cfg = compose_cfg("data=fake", *override.split(), "data._target_=tests.test_bad_input.NoData")
    with pytest.raises(CnnStudyError) as raised:
        run(cfg)
    assert str(raised.value) == message


def test_a_number_out_of_range_exits_with_code_2(tmp_path: Path) -> None:
    result = cli(
        "data=fake", "data.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2
    failed_clearly(result, "data.batch_size=0: must be an integer ≥ 1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("+logger.tensorboard.flush_sec=5",),
         "logger.tensorboard.flush_sec: lightning.pytorch.loggers.TensorBoardLogger has no such "
         "parameter; did you mean 'flush_secs'?"),
        (("augmentation=crop_flip_jitter", "+augmentation.jiter.brightness=0.2"),
         "augmentation.jiter: not a step of cnn_study.augmentation.Pipeline (a step needs a "
         "_target_); did you mean 'jitter'? steps: crop, flip, jitter"),
        (("augmentation=crop_flip_jitter", "+augmentation.flip.pp=0.2"),
         "augmentation.flip.pp: cnn_study.augmentation.RandomHorizontalFlip has no such "
         "parameter; did you mean 'p'?"),
    ],
)  # fmt: skip
def test_logger_and_augmentation_typos_name_the_key(compose_cfg, overrides, message) -> None:
    cfg = compose_cfg("data=fake", *overrides, "data._target_=tests.test_bad_input.NoData")
    with pytest.raises(CnnStudyError) as raised:
        run(cfg)
    assert str(raised.value).startswith(message)


def test_an_unwritable_cache_only_warns_and_the_run_goes_on(image_folder, tmp_path, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        dm = ImageFolderDataModule(image_folder, cache_dir=blocker / "cache", image_size=16)
        dm.setup("fit")
    assert "could not cache the decoded images" in caplog.text
    assert len(dm.splits.train_labels) > 0 and not (tmp_path / "a-file.cache").exists()


@pytest.mark.parametrize("where", ["CNN_STUDY_OUTPUT", "hydra.run.dir", "hydra.sweep.dir"])
def test_an_unwritable_output_is_named_before_any_work(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "runs"
    if where == "CNN_STUDY_OUTPUT":
        result = cli("data=fake", cwd=tmp_path, env={where: str(target)})
    else:
        result = cli(*(["-m"] if "sweep" in where else []), "data=fake", f"{where}={target}",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    failed_clearly(result, f"{target}: cannot write there, {blocker} is not a folder")
