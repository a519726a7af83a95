"""cnn_study test suite."""
