"""`python -m cnn_study.bench`: the training benchmark (`cnn_study.bench.training`)."""

import sys

from cnn_study.bench.training import main

if __name__ == "__main__":
    main()
    sys.exit(0)
