"""DataModules that hold images as uint8 tensors and hand out whole batches."""
