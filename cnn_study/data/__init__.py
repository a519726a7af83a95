"""DataModules that hand out whole uint8 batches: held in memory as tensors, or (image
folders) streamed from their files."""

from cnn_study import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "CIFAR10DataModule": "cifar10",
    "ImageFolderDataModule": "image_folder",
    "FakeDataModule": "fake",
    "InMemoryImageDataModule": "in_memory",
})  # fmt: skip
