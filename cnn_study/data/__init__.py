"""DataModules that hand out whole uint8 batches: held in memory as tensors, or (image
folders) streamed from their files."""
