"""One conversation's KV cache for a Qwen-VL model, extended turn by turn.

A :class:`KVSession` holds the token ids whose keys/values are in the cache, the M-RoPE
position of the next token and the next-token logits. Each turn feeds only the new tokens
(the new user message with its image, and the generation prompt), never the conversation
again.

Positions (Qwen2-VL's multimodal RoPE, also Qwen2.5-VL and Qwen3-VL): a text token takes
``p`` on all three axes (temporal, height, width) and the next one ``p + 1``; an image of
``h × w`` merged patches starting at ``p`` takes ``(p, p + row, p + col)`` and the text after
it starts at ``p + max(h, w)``. That rule is translation invariant, so a chunk appended to
the cache gets the positions it would have in a full prefill when it starts at the cached
sequence's next position. The model also receives the plain token index (row 0 of its
4-row ``position_ids``), which is the cache length.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import torch


def mrope_positions(input_ids: Sequence[int], image_grids: Iterable[Sequence[int]], *,
                    image_token_id: int, merge_size: int, start: int = 0) -> tuple[torch.Tensor, int]:
    """3×L M-RoPE positions of a chunk starting at position ``start``, and the next position.

    ``image_grids`` holds one (t, h, w) patch grid per image in the chunk, in order; each
    image must appear as a run of ``t·h·w / merge_size²`` image tokens.
    """
    ids = list(input_ids)
    grids = iter(image_grids)
    rows: list[torch.Tensor] = []
    position, i = start, 0
    while i < len(ids):
        if ids[i] != image_token_id:
            j = i
            while j < len(ids) and ids[j] != image_token_id:
                j += 1
            rows.append(torch.arange(position, position + j - i).expand(3, -1))
            position, i = position + j - i, j
            continue
        t, h, w = (int(v) for v in next(grids))
        gh, gw = h // merge_size, w // merge_size
        count = t * gh * gw
        if ids[i:i + count] != [image_token_id] * count:
            raise ValueError(f"image of grid {(t, h, w)} needs {count} image tokens at index {i}")
        tt, hh, ww = torch.meshgrid(torch.zeros(t, dtype=torch.long), torch.arange(gh),
                                    torch.arange(gw), indexing="ij")
        rows.append(torch.stack([tt, hh, ww]).reshape(3, -1) + position)
        position, i = position + max(gh, gw), i + count
    if not rows:
        return torch.zeros(3, 0, dtype=torch.long), start
    return torch.cat(rows, dim=1).long(), position


@attrs.frozen(eq=False)
class Mark:
    """A point to roll the session back to (e.g. the end of a prompt, before generating)."""

    length: int
    next_position: int
    logits: torch.Tensor


@attrs.define(eq=False)
class KVSession:
    """The KV cache of one conversation with ``model`` (batch of one)."""

    model: Any
    image_token_id: int
    merge_size: int
    cache: Any = None
    ids: list[int] = attrs.field(factory=list)
    next_position: int = 0
    logits: torch.Tensor | None = None  # float32 next-token logits after the last fed token

    @classmethod
    def for_model(cls, model: Any) -> "KVSession":
        config = model.config
        return cls(model, image_token_id=config.image_token_id,
                   merge_size=config.vision_config.spatial_merge_size)

    def __len__(self) -> int:
        return len(self.ids)

    @torch.inference_mode()
    def feed(self, input_ids: Sequence[int], pixel_values: torch.Tensor | None = None,
             image_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """Append a chunk (token ids, with the pixels of the images among them) to the cache;
        returns the next-token logits (vocab,) in float32."""
        ids = [int(t) for t in input_ids]
        if not ids:
            raise ValueError("feed() needs at least one token")
        grids = [] if image_grid_thw is None else image_grid_thw.tolist()
        mrope, next_position = mrope_positions(ids, grids, image_token_id=self.image_token_id,
                                               merge_size=self.merge_size, start=self.next_position)
        text = torch.arange(len(self.ids), len(self.ids) + len(ids)).unsqueeze(0)
        device = self.model.device
        position_ids = torch.cat([text, mrope]).unsqueeze(1).to(device)  # (4, 1, L)
        kwargs: dict[str, Any] = {}
        if pixel_values is not None:
            kwargs.update(pixel_values=pixel_values.to(device, self.model.dtype),
                          image_grid_thw=image_grid_thw.to(device))
        outputs = self.model(input_ids=torch.tensor([ids], device=device), position_ids=position_ids,
                             use_cache=True, logits_to_keep=1,
                             **{_cache_kwarg(self.model): self.cache}, **kwargs)
        self.cache = _output_cache(outputs)
        self.ids.extend(ids)
        self.next_position = next_position
        self.logits = outputs.logits[0, -1].float()
        return self.logits

    def mark(self) -> Mark:
        if self.logits is None:
            raise ValueError("nothing fed yet")
        return Mark(len(self.ids), self.next_position, self.logits)

    def rollback(self, mark: Mark) -> None:
        """Drop everything fed after ``mark`` (e.g. a rejected reply)."""
        if mark.length > len(self.ids):
            raise ValueError("cannot roll forward")
        drop = len(self.ids) - mark.length
        if drop:
            self.cache.crop(-drop)  # a negative count removes that many tokens (all versions)
        del self.ids[mark.length:]
        self.next_position = mark.next_position
        self.logits = mark.logits

    def truncate(self, length: int) -> None:
        """Drop the text tokens after the first ``length`` (no image token may be dropped);
        the logits are unknown until the next :meth:`feed`."""
        dropped = self.ids[length:]
        if self.image_token_id in dropped:
            raise ValueError("truncate() cannot drop image tokens; use rollback() to a mark")
        if dropped:
            self.cache.crop(-len(dropped))
            del self.ids[length:]
            self.next_position -= len(dropped)
            self.logits = None

    def generate(self, max_new_tokens: int, stop_ids: Iterable[int], *,
                 suppress_ids: Iterable[int] = (), temperature: float = 0.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[list[int], bool]:
        """Decode up to ``max_new_tokens`` tokens (greedy when ``temperature`` is 0).

        Every generated token except a stop token is fed, so afterwards the cache holds the
        prompt plus the reply's content. Returns (content token ids, stopped on a stop token).
        """
        stops, suppress = set(stop_ids), list(suppress_ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = pick(self.logits, temperature=temperature, top_p=top_p,
                         suppress=suppress, generator=generator)
            if token in stops:
                return out, True
            out.append(token)
            self.feed([token])
        return out, False


def pick(logits: torch.Tensor, *, temperature: float = 0.0, top_p: float = 1.0,
         suppress: Sequence[int] = (), generator: torch.Generator | None = None) -> int:
    """Greedy (temperature 0) or nucleus sampling from (vocab,) logits."""
    logits = logits.float().clone()
    if suppress:
        logits[list(suppress)] = float("-inf")
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1).cpu()
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=0) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _cache_kwarg(model: Any) -> str:
    """``cache`` in transformers ≥ 5.x, ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(outputs: Any) -> Any:
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values
