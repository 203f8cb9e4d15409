"""What decoding a large JPEG at a reduced scale saves the streaming loader, and what it changes.

Command:  python benchmarks/tools/jpeg_draft.py [--repeats 9]
Machine, time and result: docs/data.md ("The resize policy").

A 4000x3000 JPEG (quality 90, a smooth made-up picture) is decoded whole and as the loader decodes it for a
32x32 and a 224x224 network (libjpeg's scaling keeps both sides at least DRAFT_MARGIN times the network's);
the median milliseconds of each, interleaved, and how far the network's evaluation view of the reduced decode
is from the view of the whole decode (mean and largest difference, in levels of 255).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from jaxcnn.images import decode_image
from jaxcnn.streaming import DRAFT_MARGIN, centre_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    small = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    shapes = {"whole": None, "32x32 network": (32, 32, 3), "224x224 network": (224, 224, 3)}
    times: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(args.repeats):
        for name, shape in shapes.items():
            at_least = None if shape is None else (DRAFT_MARGIN * shape[0], DRAFT_MARGIN * shape[1])
            started = time.perf_counter()
            decode_image(data, "photo", at_least)
            times[name].append(1000 * (time.perf_counter() - started))
    whole = decode_image(data, "photo")
    print(f"a 4000x3000 JPEG of {len(data):,} bytes; median of {args.repeats}, interleaved")
    for name, shape in shapes.items():
        line = f"{name:>16}: {statistics.median(times[name]):6.1f} ms"
        if shape is not None:
            reduced = decode_image(data, "photo", (DRAFT_MARGIN * shape[0], DRAFT_MARGIN * shape[1]))
            difference = np.abs(centre_view(reduced, shape).astype(int) - centre_view(whole, shape))
            line += f"  decoded at {reduced.shape[1]}x{reduced.shape[0]}; view differs by mean "
            line += f"{difference.mean():.2f}, at most {difference.max()} levels"
        print(line)


if __name__ == "__main__":
    main()
