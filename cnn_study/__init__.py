"""cnn_study: CNN image-classification studies with PyTorch Lightning and Hydra."""

from cnn_study.config import register_resolvers
from cnn_study.schema import register_schemas

__version__ = "0.1.0"

register_resolvers()
register_schemas()
