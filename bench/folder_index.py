"""How long a data folder of N lines takes to index and validate (FolderDomain).

    python bench/folder_index.py [--lines 100000] [--dir /tmp/folder-bench] [--keep]

Writes N distinct 100x100 PNG files (the bytes of one image, copied) and a labels.jsonl of
N lines with 3 to 6 motifs each and no "split" (the seeded split), then times
`FolderDomain(folder)`: reading and checking every line, every image's header (never its
pixels), the split and the vocabulary. The page cache is warm (the files were just
written); on a busy machine compare the CPU time, printed too. Then it times random
`sample(index, "train")` calls, which decode the image.
The last line is `index_s=<seconds>`.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sparling_core.domains import FolderDomain


def write_folder(folder: Path, lines: int) -> None:
    (folder / "images").mkdir(parents=True)
    image = np.zeros((100, 100), np.uint8)
    image[40:52, 40:49] = 255
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    png = buffer.getvalue()
    rng = random.Random(0)
    with open(folder / "labels.jsonl", "w") as f:
        for i in range(lines):
            name = f"images/{i:06d}.png"
            (folder / name).write_bytes(png)
            digits = rng.sample("0123456789", rng.randint(3, 6))
            motifs = [{"symbol": d, "box": [r, c, r + 12, c + 9]}
                      for d in digits for r, c in [(rng.randint(0, 88), rng.randint(0, 91))]]
            f.write(json.dumps({"image": name, "label": digits, "motifs": motifs}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="leave the folder in place")
    parser.add_argument("--samples", type=int, default=1000, help="random sample() calls")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="folder-bench-"))
    folder = root / "data"
    try:
        if not (folder / "labels.jsonl").exists():
            start = time.perf_counter()
            write_folder(folder, args.lines)
            print(f"wrote {args.lines} lines and images in {time.perf_counter() - start:.1f} s")
        start, cpu = time.perf_counter(), time.process_time()
        domain = FolderDomain(folder)
        index_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        size = sum(a.nbytes for a in (domain._offsets, domain._lengths, domain._linenos,
                                      domain._splits, domain._motif_counts,
                                      domain._label_lengths, *domain._rows.values()))
        lines = {s: len(domain.split_range(s)) for s in ("train", "val", "test")}
        print(f"indexed {len(domain)} lines in {index_s:.2f} s ({cpu_s:.2f} s CPU) "
              f"({len(domain) / index_s:,.0f} lines/s); index {size / len(domain):.0f} "
              f"bytes/line; splits {lines}")
        rng = random.Random(1)
        n = len(domain.split_range("train"))
        picks = [rng.randrange(n) for _ in range(args.samples)]
        start = time.perf_counter()
        for i in picks:
            domain.sample(i, "train")
        per = (time.perf_counter() - start) / len(picks)
        print(f"sample(index, 'train'): {per * 1e6:.0f} us each (line re-read + PNG decode)")
        print(f"index_s={index_s:.2f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
