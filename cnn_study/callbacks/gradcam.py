"""Study A8 for every architecture: Grad-CAM heat maps of seeded test images at test end."""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from cnn_study.attribution import grad_cam
from cnn_study.callbacks.figure_output import publish_figure, seeded_sample
from cnn_study.errors import CnnStudyError
from cnn_study.figures import gradcam_figure
from cnn_study.inputs import displayable
from cnn_study.module import ImageClassifier

log = logging.getLogger(__name__)


class GradCAMFigure(Callback):
    """Explains `num_images` seeded-random images with Captum's LayerGradCam.

    The same images for the same `seed`, so runs compare. `target` is the class explained
    ("predicted" or "true"); `layer` a module name (default: the last conv layer).
    `every_n_val_epochs` > 0 also explains validation images every n epochs.
    """

    def __init__(
        self,
        num_images: int = 5,
        seed: int = 0,
        target: Literal["predicted", "true"] = "predicted",
        layer: str | None = None,
        every_n_val_epochs: int = 0,
    ) -> None:
        if target not in ("predicted", "true"):
            raise CnnStudyError(f"gradcam target={target!r}; choose 'predicted' or 'true'")
        self.num_images = num_images
        self.seed = seed
        self.target = target
        self.layer = layer
        self.every_n_val_epochs = every_n_val_epochs

    def _explain(self, trainer: L.Trainer, module: ImageClassifier, loader, name: str, step: int):
        if not trainer.is_global_zero:  # under DDP every rank has the same weights
            return
        images, labels = seeded_sample(loader, self.num_images, self.seed)
        targets = labels if self.target == "true" else None
        maps, predictions = grad_cam(module, images, targets=targets, layer=self.layer)
        names = module.class_names
        figure = gradcam_figure(
            displayable(images, module.input_spec),
            maps.numpy(),
            [names[i] for i in labels.tolist()],
            [names[i] for i in predictions.tolist()],
        )
        path = publish_figure(trainer, figure, name, step)
        log.info("Grad-CAM figure: %s", path)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        self._explain(trainer, pl_module, trainer.test_dataloaders, "test/gradcam", 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.every_n_val_epochs
        if n <= 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % n:
            return
        assert isinstance(pl_module, ImageClassifier)
        epoch = trainer.current_epoch
        self._explain(
            trainer, pl_module, trainer.val_dataloaders, f"val/gradcam_{epoch:03d}", epoch
        )
