"""Batch-invariant inference for the decoders: a map decodes to the same bits alone or
batched with any others.

Why: the service batches concurrent requests into one decode, and an answer (tokens and
their probabilities) must not depend on what it was batched with. torch's matrix multiply
(`F.linear`, `x @ W` on a 3-d `x`) folds the batch into the rows of one GEMM, and the GEMM
kernels pick their blocking, and so the order of each sum, by the number of rows: the same
row can come out different in its last bits beside 0 or 7 other maps, with one thread or
two (measured on torch 2.13: 14 to 34 of 49 (rows, batch) cases differ). Until 2026-12-07
the service padded every decode to a fixed chunk of 8 maps instead, and a lone request
paid for 8.

Here every multiply is a batched multiply over the samples, `torch.bmm(x, W.T expanded)`:
torch runs it as one matrix product per sample, whose shape is the sample's own (its rows,
the layer's width), never the batch's. Everything else a decoder does is row-wise (layer
norm, softmax, attention per sample and head, reductions within a sample, top-k and sorts
per row) or elementwise, and convolutions run one sample at a time (torch picks the
convolution kernel by batch size). Inside the context torch runs on one thread (see
`batch_invariant`). `tests/test_batch_invariant.py` checks every decoder kind, bit for
bit, with torch set to 1 and to 2 threads outside the context.

Use: `with batch_invariant(): decoder.encode(motifs)`, then `IncrementalDecoder` for the
greedy steps (what `SparlingModel.decode_motifs(..., batch_invariant=True)` does). The
layers here (`Linear`, `Conv2d`, `TransformerEncoderLayer`) are the torch ones, with the
same parameters and state-dict keys, outside the context; inside it they take the
invariant path. The flag is a context variable, so it holds for the thread (or task) that
set it only.

`IncrementalDecoder` also keeps the keys and values of the tokens already emitted and the
cross-attention keys and values of the memory (computed once per decode), so that a greedy
step costs one token's work instead of re-running the whole prefix. Its answers equal the
full re-run's up to float rounding (tests: same tokens, probabilities within 1e-5).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["batch_invariant", "enabled", "linear", "matmul", "attention", "Linear", "Conv2d",
           "TransformerEncoderLayer", "IncrementalDecoder", "uses_plain_layers"]

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_invariant", default=False)


def enabled() -> bool:
    """Whether this thread is inside `batch_invariant()`."""
    return _ENABLED.get()


@contextlib.contextmanager
def batch_invariant(on: bool = True) -> Iterator[None]:
    """Within it, this module's layers compute each sample (dim 0) as they would alone,
    and torch runs on one thread in this thread (`torch.set_num_threads(1)`, restored on
    exit): a batched GEMM on several threads splits the work of one product differently
    from that of several (on an AMD EPYC with torch 2.13, 240 of 700 small `bmm` shapes
    gave a lone sample other bits than the same sample in a batch at 2 threads, none at 1),
    and the decoders' products are far too small to gain from more threads. With the
    OpenMP build the count is per thread, but torch also starts every thread that first
    calls into it while the context is open (in any thread) on 1 thread: a long-lived
    worker thread should set its own count when it starts (`torch.set_num_threads`, after
    one `torch.get_num_threads()`), as the service's compute threads do."""
    token = _ENABLED.set(on)
    threads = torch.get_num_threads()
    single = on and threads != 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(threads)
        _ENABLED.reset(token)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """`F.linear` with dim 0 as the sample dim: one (rows, in) x (in, out) product per sample."""
    shape = x.shape
    rows = x.reshape(shape[0], -1, shape[-1])
    w = weight.t()
    y = torch.bmm(rows, w.expand(shape[0], *w.shape))
    if bias is not None:
        y = y + bias
    return y.reshape(*shape[:-1], weight.shape[0])


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (N, ..., K) @ w (K, M): per sample inside `batch_invariant()`, else plain `@`."""
    return linear(x, w.t()) if enabled() else x @ w


class Linear(nn.Linear):
    """nn.Linear; per sample (`linear`) inside `batch_invariant()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if enabled() and x.dim() >= 2:
            return linear(x, self.weight, self.bias)
        return super().forward(x)


class Conv2d(nn.Conv2d):
    """nn.Conv2d; one sample at a time inside `batch_invariant()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if enabled() and x.dim() == 4 and x.shape[0] > 1:
            return torch.cat([super(Conv2d, self).forward(x[i:i + 1])
                              for i in range(x.shape[0])])
        return super().forward(x)


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A key padding mask (N, S), bool (True = ignore) or additive float -> additive float."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        mask, float("-inf"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention over projected q (N, T, d), k and v (N, S, d) with
    `heads` heads and an additive key mask (N, S): (N, T, d). Each (sample, head) is its own
    small product."""
    n, t, d = q.shape
    s = k.shape[1]
    hd = d // heads
    # contiguous: torch.matmul folds (N, heads) into one batch dim, which for a transposed
    # view of several samples needs a copy but for one sample does not, and the GEMM then
    # gets other strides and, on some CPUs (an AMD EPYC, 2026-12-08), another kernel: the
    # lone sample's logits differed in the last bit from the batched one's
    q = q.reshape(n, t, heads, hd).transpose(1, 2).contiguous()
    k = k.reshape(n, s, heads, hd).transpose(1, 2).contiguous()
    v = v.reshape(n, s, heads, hd).transpose(1, 2).contiguous()
    logits = torch.matmul(q, k.transpose(-1, -2)) * hd ** -0.5  # (N, heads, T, S)
    if key_mask is not None:
        logits = logits + key_mask[:, None, None, :]
    return torch.matmul(logits.softmax(-1), v).transpose(1, 2).reshape(n, t, d)


def _check_pre_norm(layer: nn.Module) -> None:
    if not getattr(layer, "norm_first", False) or not layer.self_attn.batch_first:
        raise NotImplementedError("the batch-invariant path runs pre-norm, batch-first "
                                  "transformer layers only")


def _feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    hidden = layer.activation(linear(x, layer.linear1.weight, layer.linear1.bias))
    return linear(hidden, layer.linear2.weight, layer.linear2.bias)


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor,
                    key_mask: torch.Tensor | None) -> torch.Tensor:
    q, k, v = linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    out = attention(q, k, v, attn.num_heads, key_mask)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer; inside `batch_invariant()` (pre-norm, batch-first, key
    padding mask only) every sample is computed as alone."""

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if not enabled():
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        _check_pre_norm(self)
        if src_mask is not None or is_causal:
            raise NotImplementedError("the batch-invariant encoder takes a key padding mask only")
        key_mask = _additive(src_key_padding_mask, src.dtype)
        x = src + _self_attention(self.self_attn, self.norm1(src), key_mask)
        return x + _feed_forward(self, self.norm2(x))


class IncrementalDecoder:
    """Greedy steps of a `_SequenceHead` (token embedding, learned positions, a pre-norm
    nn.TransformerDecoder, final norm, output layer) one token at a time, batch-invariant,
    with the earlier tokens' keys and values and the memory's cross-attention keys and
    values kept. `step(tokens)` takes the newest token of each map (N,) and returns the
    next-token logits (N, V)."""

    def __init__(self, head: nn.Module, memory: torch.Tensor,
                 key_padding_mask: torch.Tensor | None):
        self.head = head
        self.layers = list(head.decoder.layers)
        for layer in self.layers:
            _check_pre_norm(layer)
        d = memory.shape[-1]
        self.key_mask = _additive(key_padding_mask, memory.dtype)
        self.memory_kv = [
            linear(memory, layer.multihead_attn.in_proj_weight[d:],
                   layer.multihead_attn.in_proj_bias[d:]).chunk(2, -1)
            for layer in self.layers]
        self.cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        self.position = 0

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        head = self.head
        if self.position >= head.position_embedding.shape[0]:
            raise ValueError(f"the decoder has {head.position_embedding.shape[0]} positions")
        x = head.token_embedding(tokens[:, None]) + head.position_embedding[self.position]
        for i, layer in enumerate(self.layers):
            sa, ca = layer.self_attn, layer.multihead_attn
            d = x.shape[-1]
            q, k, v = linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).chunk(3, -1)
            if self.cache[i] is not None:
                k = torch.cat([self.cache[i][0], k], 1)
                v = torch.cat([self.cache[i][1], v], 1)
            self.cache[i] = (k, v)
            x = x + linear(attention(q, k, v, sa.num_heads), sa.out_proj.weight, sa.out_proj.bias)
            q = linear(layer.norm2(x), ca.in_proj_weight[:d], ca.in_proj_bias[:d])
            mk, mv = self.memory_kv[i]
            x = x + linear(attention(q, mk, mv, ca.num_heads, self.key_mask),
                           ca.out_proj.weight, ca.out_proj.bias)
            x = x + _feed_forward(layer, layer.norm3(x))
        if head.decoder.norm is not None:
            x = head.decoder.norm(x)
        self.position += 1
        return linear(head.norm(x), head.out.weight, head.out.bias)[:, 0]


def uses_plain_layers(module: nn.Module) -> list[str]:
    """Names of the torch layers in `module` that compute across samples and are not this
    module's invariant versions (nn.Linear, nn.Conv2d, nn.TransformerEncoderLayer): a
    decoder that should decode batch-invariantly has none outside its `_SequenceHead`'s
    decoder layers and output (which `IncrementalDecoder` reads directly)."""
    ours = (Linear, Conv2d, TransformerEncoderLayer)
    plain = (nn.Linear, nn.Conv2d, nn.TransformerEncoderLayer)
    skip: set[int] = set()
    for m in module.modules():
        if isinstance(m, nn.TransformerDecoderLayer):
            skip.update(id(x) for x in m.modules())
        if isinstance(m, nn.MultiheadAttention):  # read through their parameters
            skip.update(id(x) for x in m.modules())
    return [name for name, m in module.named_modules()
            if isinstance(m, plain) and not isinstance(m, ours) and id(m) not in skip]

