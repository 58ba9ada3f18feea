"""Reading activations at named hook points, and replacing an MLP's output.

Both work with plain PyTorch hooks on the modules the adapter names, so they are the same for every family
and leave the model untouched once they return (hooks are removed in ``finally`` blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from transcoders.models.loading import LoadedModel


class StopForward(Exception):
    """Raised from a hook to abandon the rest of a forward pass once every wanted activation is recorded."""


def first_input(args: tuple, kwargs: dict[str, Any]) -> Tensor:
    """The tensor a module is called on: its first positional argument, or ``hidden_states=`` (Llama-style
    attention is called with keyword arguments only)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise RuntimeError(f"cannot find the input tensor of a module called with keywords {sorted(kwargs)}")


def first_output(output: Any) -> Tensor:
    """Attention modules return ``(output, pattern)``; blocks return a tensor (or a tuple in older releases)."""
    return output[0] if isinstance(output, tuple) else output


def capture(
    lm: LoadedModel,
    input_ids: Tensor,
    names: Sequence[str],
    *,
    attention_mask: Tensor | None = None,
    stop_early: bool = True,
) -> dict[str, Tensor]:
    """Run ``input_ids [batch, seq]`` through the model and return ``{name: activation [batch, seq, d]}``.

    With ``stop_early`` the forward is abandoned (StopForward, caught here) as soon as the last wanted
    activation is recorded, so later blocks, the final norm and the unembedding never run: reading layer 6 of a
    30-layer model costs a quarter of a forward. Activations are detached. Gradient mode is the caller's
    choice (wrap the call in ``torch.inference_mode()`` for speed).
    """
    names = list(dict.fromkeys(names))  # unique, order kept
    if not names:
        raise ValueError("capture() needs at least one hook point name")
    points = {name: lm.adapter.hook_point(name) for name in names}  # validates every name before running
    acts: dict[str, Tensor] = {}

    def record(name: str, tensor: Tensor) -> None:
        acts[name] = tensor.detach()
        if stop_early and len(acts) == len(names):
            raise StopForward

    def make_hook(name: str, where: str) -> Callable:
        if where == "input":
            return lambda module, args, kwargs: record(name, first_input(args, kwargs))
        return lambda module, args, output: record(name, first_output(output))

    handles = []
    try:
        for name, (module, where) in points.items():
            hook = make_hook(name, where)
            if where == "input":
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook))
        device = lm.device  # token ids may come from the CPU (the corpus)
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        try:
            lm.model(input_ids=input_ids.to(device), attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in acts]
    if missing:  # a bug in an adapter (a module the forward never calls), not a user error
        raise RuntimeError(f"hook points never ran during the forward: {missing}")
    return {name: acts[name] for name in names}


@contextmanager
def patch_mlp(lm: LoadedModel, layer: int, fn: Callable[[Tensor, Tensor], Tensor]) -> Iterator[None]:
    """While active, the MLP of ``layer`` returns ``fn(mlp_input, mlp_output)`` instead of ``mlp_output``.

    ``mlp_input`` is the normalised MLP input, both are ``[batch, seq, d_model]``. This is how a transcoder is
    spliced in (``fn = lambda x, y: transcoder(x)``) or an MLP ablated (``lambda x, y: torch.zeros_like(y)``).
    Anything the family applies after the MLP (Gemma 2/3's post-feedforward norm) still applies to the
    replacement. Contexts nest, for several layers (or several edits of one layer, applied in order).
    """
    module = lm.adapter.mlp(layer)  # raises ModelError for a bad layer

    def hook(module, args, kwargs, output):
        return fn(first_input(args, kwargs), output)

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def start_at(lm: LoadedModel, layer: int, resid: Tensor, *, tuple_output: bool = False) -> Iterator[None]:
    """While active, a forward skips blocks ``0 .. layer-1`` and block ``layer`` reads ``resid`` (its input,
    ``[batch, seq, d_model]``, recorded from an earlier forward of the same tokens) instead of what reached it.

    The layers below are not run at all, so a pass that only changes ``layer`` and above costs the blocks from
    ``layer`` up; everything the model computes outside its blocks (embeddings, rotary tables, masks, the final
    norm and unembedding) still runs, so every family works unchanged. Skipped blocks return their input as they
    are called (a tensor, or a one-tuple where ``tuple_output``: blocks of transformers releases before 4.54).
    """
    lm.adapter.check_layer(layer)
    blocks = [lm.adapter.layer(i) for i in range(layer)]

    def skip(*args: Any, **kwargs: Any) -> Any:
        x = first_input(args, kwargs)
        return (x,) if tuple_output else x

    def feed(module, args, kwargs):
        if args:
            return (resid.to(args[0].dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resid.to(kwargs["hidden_states"].dtype)}

    for b in blocks:
        b.forward = skip  # an instance attribute: nn.Module.__call__ finds it first
    handle = lm.adapter.layer(layer).register_forward_pre_hook(feed, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for b in blocks:
            del b.forward
