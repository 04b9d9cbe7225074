"""Which channels explain no token, and which tokens no channel explains?

    python experiments/selectivity_check.py CKPT [--domain NAME] [--n 500] [--threads 1]

On the first `--n` validation images of the checkpoint's domain (or `--domain`, say
digit-circle for a checkpoint trained on an exported DigitCircle folder that is not on this
machine), prints what the resampler reads (sparling_core/training/resample.py):

- each channel's selectivity (`channel_selectivity`: the best max(AUC, 1 - AUC) over label
  tokens of the channel's peak sparse activation per image; about 0.5 for a channel on noise
  or silent, near 1 for a channel on one motif);
- each token's presence error (`presence_errors`: the presence head's cross-entropy in nats;
  about ln 2 = 0.69 for a token no channel explains).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import get_domain  # noqa: E402
from sparling_core.training.resample import channel_selectivity, presence_errors  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--domain", default=None)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).model.eval()
    dom = get_domain(args.domain or model.config.domain)
    samples = dom.samples(list(dom.split_range("val")[:args.n]), "val")
    images, labels = dom.batch(samples)
    scores = channel_selectivity(model, images, labels)
    errors = presence_errors(model, images, labels)
    print("selectivity by channel:", {c: round(float(v), 3) for c, v in enumerate(scores)})
    print("presence error by token (nats):",
          {t: round(float(e), 3) for t, e in zip(dom.vocabulary, errors, strict=False)})


if __name__ == "__main__":
    main()
