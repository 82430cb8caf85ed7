"""The baselines of ``benchmarks/patching.py``: exact head-output sweeps written the way a user would.

Both functions compute, for every attention head ``(L, h)``, the normalised denoising effect of
patching that head's output ``z`` (the ``d_head`` slice of the attention output projection's input,
at every position) from the clean run into the corrupted run::

    effect[L, h] = (mean m(patched) - mean m(corrupted)) / (mean m(clean) - mean m(corrupted))

where ``m(logits) -> [batch]`` is the caller's metric and the means are over the batch of prompt
pairs. They are what the project's own exact sweep is timed against:

* `nnsight_head_sweep` — the idiomatic nnsight form (Fiotto-Kaufman et al. 2024, "NNsight and
  NDIF: Democratizing Access to Open-Weight Foundation Model Internals", ICLR 2025): one
  trace per layer, with batched invokes — a clean one that reads the layer's o_proj input and one
  corrupted invoke per head that overwrites that head's slice with the clean one.
* `hook_loop_head_sweep` — plain PyTorch: cache every layer's o_proj input on one clean forward,
  then one full corrupted forward per head with a forward pre-hook that swaps the clean slice in.

``benchmarks/`` is not a package; import this module with ``sys.path.insert(0, "benchmarks")``.
nnsight is a ``bench`` extra (``pip install -e .[bench]``) and is imported only when
`nnsight_head_sweep` runs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

Metric = Callable[[torch.Tensor], torch.Tensor]


def _normalise(patched: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """Normalised denoising effect from batch-mean metrics.

    Args:
        patched: Metric of every patched run, shape ``[n_layers, n_heads, batch]``.
        clean: Metric of the clean run, shape ``[batch]``.
        corrupted: Metric of the corrupted run, shape ``[batch]``.

    Returns:
        Float tensor ``[n_layers, n_heads]``: 0 where patching changes nothing, 1 where it restores
        the clean metric.
    """
    clean_mean, corrupted_mean = clean.float().mean(), corrupted.float().mean()
    return (patched.float().mean(-1) - corrupted_mean) / (clean_mean - corrupted_mean)


def _check_tokens(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape or clean.dim() != 2:
        raise ValueError(f"clean and corrupted must be token ids of one shape [batch, pos], got {tuple(clean.shape)} and {tuple(corrupted.shape)}")


def nnsight_head_sweep(
    hf_model: torch.nn.Module,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    *,
    o_proj_path: Callable[[Any, int], Any],
    n_layers: int,
    n_heads: int,
    d_head: int,
    tokenizer: Any = None,
) -> torch.Tensor:
    """Exact head-output sweep in idiomatic nnsight 0.8: one batched trace per layer.

    The plain transformers model is wrapped in ``nnsight.TransformersModel`` (nnsight 0.8's
    class for Hugging Face models; ``LanguageModel`` is its deprecated alias, and the bare
    ``NNsight`` wrapper refuses to batch several invokes). Each layer's trace has ``n_heads + 1``
    invokes in one forward of ``batch * (n_heads + 1)`` rows: the clean invoke reads the o_proj
    input, a ``tracer.barrier`` hands it to the head invokes, and each head invoke overwrites its
    ``d_head`` slice in place and saves the metric of its logits. One more trace with a clean and
    a corrupted invoke gives the unpatched baselines.

    Wrapping installs nnsight's controller as the ``forward`` of every submodule of ``hf_model``,
    permanently (inert outside a trace, but present in later forwards): time other methods on
    the model before this one, or on another copy.

    Args:
        hf_model: A transformers causal LM (``*ForCausalLM`` / ``GPT2LMHeadModel``), in eval mode.
        clean: Clean token ids, ``[batch, pos]``.
        corrupted: Corrupted token ids, same shape as ``clean``.
        metric: ``metric(logits [batch, pos, vocab]) -> [batch]``.
        o_proj_path: ``o_proj_path(envoy_root, layer)`` -> the nnsight envoy of layer ``layer``'s
            attention output projection, e.g. ``lambda m, L: m.model.layers[L].self_attn.o_proj``
            (Llama), ``m.transformer.h[L].attn.c_proj`` (GPT-2) or
            ``m.gpt_neox.layers[L].attention.dense`` (GPT-NeoX).
        n_layers: Number of layers.
        n_heads: Query heads per layer.
        d_head: Head dimension; the o_proj input is ``[batch, pos, n_heads * d_head]``, head-major.
        tokenizer: The tokenizer for the pipeline ``TransformersModel`` builds around the model
            (only its pad token and padding side are used, for token-id inputs of equal length).
            ``None`` loads the one at ``hf_model.name_or_path``.

    Returns:
        Float tensor ``[n_layers, n_heads]`` of normalised denoising effects.
    """
    from nnsight import TransformersModel

    _check_tokens(clean, corrupted)
    model = TransformersModel(hf_model, tokenizer=tokenizer)
    patched = torch.empty(n_layers, n_heads, clean.shape[0])
    with torch.no_grad():
        with model.trace() as tracer:
            with tracer.invoke(clean):
                clean_metric = metric(model.output.logits).save()
            with tracer.invoke(corrupted):
                corrupted_metric = metric(model.output.logits).save()

        for layer in range(n_layers):
            o_proj = o_proj_path(model, layer)
            head_metrics = []
            with model.trace() as tracer:
                barrier = tracer.barrier(n_heads + 1)
                with tracer.invoke(clean):
                    z_clean = o_proj.input
                    barrier()
                for head in range(n_heads):
                    heads = slice(head * d_head, (head + 1) * d_head)
                    with tracer.invoke(corrupted):
                        barrier()
                        o_proj.input[:, :, heads] = z_clean[:, :, heads]
                        head_metrics.append(metric(model.output.logits).save())
            patched[layer] = torch.stack(head_metrics)
    return _normalise(patched, clean_metric, corrupted_metric)


def hook_loop_head_sweep(
    hf_model: torch.nn.Module,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    *,
    o_proj_module: Callable[[torch.nn.Module, int], torch.nn.Module],
    n_layers: int,
    n_heads: int,
    d_head: int,
) -> torch.Tensor:
    """Exact head-output sweep as a plain PyTorch forward-pre-hook loop.

    One clean forward caches every layer's o_proj input (and gives the clean metric), one
    corrupted forward gives the corrupted metric, then each ``(layer, head)`` gets one full
    corrupted forward with a pre-hook on that layer's o_proj that swaps in the clean ``d_head``
    slice: ``n_layers * n_heads + 2`` forwards of ``batch`` rows in all.

    Args:
        hf_model: A transformers causal LM, in eval mode.
        clean: Clean token ids, ``[batch, pos]``.
        corrupted: Corrupted token ids, same shape as ``clean``.
        metric: ``metric(logits [batch, pos, vocab]) -> [batch]``.
        o_proj_module: ``o_proj_module(hf_model, layer)`` -> layer ``layer``'s attention output
            projection module, e.g. ``lambda m, L: m.model.layers[L].self_attn.o_proj``.
        n_layers: Number of layers.
        n_heads: Query heads per layer.
        d_head: Head dimension; the o_proj input is ``[batch, pos, n_heads * d_head]``, head-major.

    Returns:
        Float tensor ``[n_layers, n_heads]`` of normalised denoising effects.
    """
    _check_tokens(clean, corrupted)
    modules = [o_proj_module(hf_model, layer) for layer in range(n_layers)]
    cache: list[torch.Tensor | None] = [None] * n_layers

    def saver(layer: int) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> None:
            cache[layer] = args[0].detach().clone()

        return hook

    def patcher(layer: int, heads: slice) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            z = args[0].clone()
            z[:, :, heads] = cache[layer][:, :, heads]
            return (z, *args[1:])

        return hook

    patched = torch.empty(n_layers, n_heads, clean.shape[0])
    with torch.no_grad():
        handles = [module.register_forward_pre_hook(saver(layer)) for layer, module in enumerate(modules)]
        try:
            clean_metric = metric(hf_model(clean).logits)
        finally:
            for handle in handles:
                handle.remove()
        corrupted_metric = metric(hf_model(corrupted).logits)
        for layer, module in enumerate(modules):
            for head in range(n_heads):
                handle = module.register_forward_pre_hook(patcher(layer, slice(head * d_head, (head + 1) * d_head)))
                try:
                    patched[layer, head] = metric(hf_model(corrupted).logits)
                finally:
                    handle.remove()
    return _normalise(patched, clean_metric, corrupted_metric)
