"""How much a segmenter's line context (`SegmenterConfig.context`) adds to what its stem computes, on real scans.

    python tools/context_share.py WEIGHTS [DIR] [--n 12]      DIR: a `digitise synth` / `digitise foreign` folder

For each of the first n scans: the mean norm of the context branch's output over ink pixels, divided by the mean
norm of the stem features it is added to. Near 0: the branch is unused (a gate grown at zero that stayed shut);
the model card's stages 30-36 quote the median and maximum.
"""
import argparse

import numpy as np
import torch

from digitiser.evaluate import image_for, truth_files
from digitiser.imageio import decode_scan
from digitiser.predictor import Digitiser, ink_planes

INK = 0.3  # ink plane level (0 = paper, 1 = black) above which a pixel counts as ink


def context_share(model, image: np.ndarray) -> float:
    """Branch / stem feature norm, each averaged over the image's ink pixels. image: HxW grey or HxWx3 BGR."""
    x = torch.from_numpy(np.ascontiguousarray(ink_planes(image, model.config.in_channels)))[None]
    with torch.no_grad():
        stem = model.stem(x)
        branch = model.context.out(model.context.layers(stem))
    ink = x[0].max(dim=0).values > INK
    return float(branch.norm(dim=1)[0][ink].mean() / stem.norm(dim=1)[0][ink].mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("dir", nargs="?", default="data/foreign")
    ap.add_argument("--n", type=int, default=12, help="scans to measure (the first n by name)")
    args = ap.parse_args(argv)
    reader = Digitiser(args.weights, device="cpu")
    model = reader.model
    if not model.config.context:
        raise SystemExit(f"{args.weights} has no line context layers (config.context = 0): nothing to measure")
    shares = []
    for truth in truth_files(args.dir)[:args.n]:
        scan = decode_scan(image_for(truth).read_bytes())
        shares.append(context_share(model, reader.pixels(scan)))
    if not shares:
        raise SystemExit(f"no scans in {args.dir}: make some with `digitise foreign {args.dir} --n 300 --seed 2718`")
    print(f"{reader.model_version[:12]}: branch / stem feature norm on ink pixels of {len(shares)} scans: "
          f"median {np.median(shares):.3f}, max {max(shares):.3f}")


if __name__ == "__main__":
    main()
