"""The article's demos as pictures: convolution, an edge filter, padding and max pooling.

Command:  JAXCNN_DATA_DIR=../shared/data python experiments/article_demos.py [--out demos]
Smoke:    python experiments/article_demos.py --smoke   (the same, with a drawn stroke for the digit)
Machine:  any; takes a few seconds.
Result:   prints the 5x5 image convolved with the 3x3 filter (top-left 4) and writes
          convolution.png, edge.png, padding.png and pooling.png (``jaxcnn demo`` does the same).
"""

from __future__ import annotations

import sys

from jaxcnn.cli import main

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--smoke"]
    if "--smoke" in sys.argv[1:]:
        args += ["--data-dir", ""]  # no MNIST: the edge demo uses a drawn stroke
    sys.exit(main(["demo", *args]))
