"""Is a checkpoint's decoder or its sparse map the bottleneck?

    python experiments/decoder_probe.py CKPT [--train 20000] [--steps 4000] [--lr 2e-3]
        [--encoder set|relative] [--layers L] [--cache FILE]

Freezes the checkpoint's motif model and bottleneck (eval mode), computes the sparse maps of
`--train` train images and 1,000 validation images once, and trains a *fresh* generic
`points` decoder (top-k points only, the checkpoint's sizes) on them, batch 32, whatever
decoder the checkpoint itself has (so it also asks: could a generic decoder read the maps
of a model trained with the channel decoder?). It
prints the fresh decoder's teacher-forced exact match on the validation maps as it learns,
and two properties of the maps themselves that no decoder can get round:

- each channel's majority symbol (by how many of its activations fall in that symbol's
  boxes), and which symbols no channel claims;
- how often the set of symbols the channels say are present equals the label's set.

If the fresh decoder levels off near the set-match rate, the map is what limits the model,
not the decoder.

`--encoder relative` gives the fresh decoder `"point_encoder": "relative"`
(`RelativePointEncoder`: the same tokens, but each attention logit between two points also
gets a learned bias from their displacement, as point-cloud transformers do; no domain rule
either). `--cache FILE` keeps the frozen maps'
points (computed once per checkpoint and --train) for the next variant.
"""
import argparse
import collections
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import get_domain  # noqa: E402
from sparling_core.models.sparling import IGNORE, PointDecoder, encode_labels  # noqa: E402


def sparse_maps(model, decoder, dom, seeds, split: str, batch: int = 100):
    """Top-k points (values, channels, places, active) of the frozen sparse maps, the raw
    maps' active sites as (image, channel, row, col), the samples and their labels."""
    parts, sites, samples, labels = [], [], [], []
    for i in range(0, len(seeds), batch):
        chunk = dom.samples(seeds[i:i + batch], split)
        images, lab = dom.batch(chunk)
        with torch.no_grad():
            maps = model.sparse_motifs(images)
        parts.append(decoder.points(maps))
        nz = maps.nonzero()
        nz[:, 0] += i
        sites.append(nz)
        samples += chunk
        labels += lab
    points = [torch.cat([p[k] for p in parts]) for k in range(4)]
    return points, torch.cat(sites), samples, labels


def channel_symbols(sites, samples) -> dict[int, str]:
    """Each channel's majority symbol among the boxes its activations fall in."""
    count = collections.Counter()
    for n, c, r, col in sites.tolist():
        for motif in samples[n].motifs:
            b = motif.box
            if b[0] <= r < b[2] and b[1] <= col < b[3]:
                count[c, str(motif.symbol)] += 1
    best: dict[int, tuple[int, str]] = {}
    for (c, symbol), k in count.items():
        if k > best.get(c, (0, ""))[0]:
            best[c] = (k, symbol)
    return {c: symbol for c, (_, symbol) in sorted(best.items())}


def set_match(sites, samples, symbols: dict[int, str]) -> float:
    fired = collections.defaultdict(set)
    for n, c, _, _ in sites.tolist():
        fired[n].add(symbols.get(c, "?"))
    return sum(fired[n] == {str(m.symbol) for m in s.motifs}
               for n, s in enumerate(samples)) / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder", choices=("set", "relative"), default="set")
    parser.add_argument("--layers", type=int, default=None,
                        help="encoder layers (default: the checkpoint's)")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).model.eval()
    cfg = model.config
    dom = get_domain(cfg.domain)
    torch.manual_seed(0)
    layers = cfg.encoder_layers if args.layers is None else args.layers
    decoder = PointDecoder(cfg.motif_channels, cfg.image_shape, cfg.max_points,
                           cfg.fourier_features, cfg.d_model, cfg.n_heads, layers,
                           cfg.decoder_layers, cfg.max_digits + 1, cfg.vocab_size,
                           point_encoder=args.encoder)
    t = time.time()
    cached = args.cache is not None and args.cache.exists()
    if cached:  # tensors and lists of ints only: weights_only loading
        c = torch.load(args.cache, weights_only=True)
        train, train_labels, val, val_labels = (c["train"], c["train_labels"], c["val"],
                                                c["val_labels"])
    else:
        train, _, _, train_labels = sparse_maps(model, decoder, dom, list(range(args.train)),
                                                "train")
        val, val_sites, val_samples, val_labels = sparse_maps(
            model, decoder, dom, list(dom.split_range("val")[:1000]), "val")
        if args.cache is not None:
            torch.save({"train": train, "train_labels": train_labels, "val": val,
                        "val_labels": val_labels}, args.cache)
    if not cached:
        print(f"maps: {time.time() - t:.0f} s, {float(train[3].float().sum(1).mean()):.2f} active "
              "points per train image", flush=True)
        symbols = channel_symbols(val_sites, val_samples)
        unclaimed = sorted(set(dom.symbols) - set(symbols.values()), key=str)
        print(f"channel -> majority symbol: {symbols}; unclaimed symbols: {unclaimed}")
        print(f"label set == set of the firing channels' symbols: "
              f"{set_match(val_sites, val_samples, symbols):.3f} of 1,000 val images", flush=True)

    print(f"encoder {args.encoder}, {layers} layers, "
          f"{sum(p.numel() for p in decoder.parameters()):,} decoder parameters", flush=True)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    inputs, targets = encode_labels(train_labels, cfg.max_digits, cfg.vocab_size)
    val_inputs, val_targets = encode_labels(val_labels, cfg.max_digits, cfg.vocab_size)

    def encode(points):
        tokens, mask = decoder.point_tokens(*points)
        return decoder.encode_tokens(tokens, points[2], mask), mask

    def exact_match() -> float:
        decoder.eval()
        with torch.no_grad():
            memory, mask = encode(val)
            predicted = decoder(memory, mask, val_inputs).argmax(-1)
        decoder.train()
        return float(((predicted == val_targets) | (val_targets == IGNORE)).all(1).float().mean())

    generator = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(train[0]), (32,), generator=generator)
        memory, mask = encode([p[index] for p in train])
        logits = decoder(memory, mask, inputs[index])
        loss = F.cross_entropy(logits.flatten(0, 1), targets[index].flatten(),
                               ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0:
            print(f"step {step}: loss {loss.item():.3f}, val exact match (teacher-forced) "
                  f"{exact_match():.3f}, {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
