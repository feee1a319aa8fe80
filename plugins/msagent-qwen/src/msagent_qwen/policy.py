"""The ``qwen`` policy: a local Qwen2.5-VL / Qwen3-VL checkpoint through transformers.

The conversation is :func:`msagent.protocol.build_messages` rendered with the checkpoint's
own chat template. Decoding is greedy with at most ``max_new_tokens`` per turn; on a retry
(the agent rejected the previous reply and set ``episode.feedback``) it samples at
``retry_temperature`` so the retry can differ.

KV reuse (``reuse_kv=True``, the default): each episode keeps its KV cache, keyed by
``episode.id`` and released in :meth:`QwenPolicy.end_episode`. A turn prefills only what the
turn adds — the end of the accepted reply's assistant turn, the user message with the new
overlay image, and the generation prompt. A rejected reply is rolled back (the cache is
cropped to the end of the prompt), since the agent does not show it again. The cache holds
exactly the tokens a full prefill of the re-rendered conversation would: when the decoded
reply re-tokenizes differently in context than it was sampled (rare: e.g. a reply starting
with a newline, which merges with the generation prompt's), the reply is re-fed in those
tokens. ``reuse_kv=False`` re-prefills the whole conversation every turn (upstream's way).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import attrs

from msagent import Episode, Policy, Reply, protocol
from msagent.errors import InvalidInput, PolicyError

from . import chat, loading
from .kv import KVSession, Mark

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class _EpisodeState:
    """One episode's cache and where the conversation stands in it."""

    session: KVSession
    prompt_text: str  # the rendered conversation up to and including the generation prompt
    n_images: int  # images in the cache
    n_history: int  # valid replies in the conversation (episode.history())
    prompt_mark: Mark  # the cache at the end of the prompt, before the pending reply
    reply_ids: list[int] = attrs.field(factory=list)  # the pending reply's content tokens
    reply_text: str | None = None


class QwenPolicy(Policy):
    """A Qwen-VL model (default: the released MedSAM-Agent checkpoint) choosing tool calls.

    Options: ``model`` (local directory or Hugging Face id in the local cache; default
    ``$MSAGENT_QWEN_MODEL``, then ``Saint-lsy/MedSAM-Agent-Qwen3-VL-8B-MedSAM2``), ``device``
    ("auto", "cpu", "cuda", "cuda:1"), ``dtype`` ("auto", "bfloat16", "float16", "float32"),
    ``attn_implementation`` (e.g. "sdpa", "flash_attention_2"), ``max_pixels`` (cap on the
    pixels per image given to the vision tower), ``max_new_tokens`` (128), ``reuse_kv``
    (True), ``retry_temperature`` (0.7) and ``retry_top_p`` (0.9), ``seed`` (sampling seed),
    ``image_size`` (512: the side of the policy images).
    """

    name = "qwen"
    # none: every distinct option set loads another copy of the model, so an API client that
    # could vary them could exhaust the server's memory; the operator configures the policy
    client_options = {}

    def __init__(self, model: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 attn_implementation: str | None = None, max_pixels: int | None = None,
                 max_new_tokens: int = 128, reuse_kv: bool = True, retry_temperature: float = 0.7,
                 retry_top_p: float = 0.9, seed: int | None = None,
                 image_size: int = protocol.POLICY_IMAGE_SIZE) -> None:
        import torch

        if int(max_new_tokens) < 1:
            raise InvalidInput(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.path = loading.resolve_model(model)
        self.model, self.processor = loading.load(
            self.path, device=device, dtype=dtype, attn_implementation=attn_implementation,
            max_pixels=max_pixels)
        self.tokenizer = self.processor.tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.reuse_kv = bool(reuse_kv)
        self.retry_temperature = float(retry_temperature)
        self.retry_top_p = float(retry_top_p)
        self.image_size = int(image_size)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.stop_ids = _stop_ids(self.model, self.tokenizer)
        config = self.model.config
        self.suppress_ids = [config.image_token_id, config.video_token_id]
        self._special = tuple(t for t in self.tokenizer.all_special_tokens if t) + tuple(
            t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special)
        self._states: dict[str, _EpisodeState] = {}
        self._lock = threading.Lock()  # one forward pass at a time on the shared model

    # -- the Policy contract -----------------------------------------------------
    def act(self, episode: Episode) -> Reply:
        with self._lock:
            try:
                return self._act(episode)
            except PolicyError:
                self._states.pop(episode.id, None)
                raise
            except (RuntimeError, ValueError) as exc:  # e.g. CUDA out of memory
                self._states.pop(episode.id, None)
                raise PolicyError(f"qwen policy failed on {self.path}: {exc}") from exc

    def end_episode(self, episode: Episode) -> None:
        with self._lock:
            self._states.pop(episode.id, None)

    @property
    def open_episodes(self) -> int:
        """Episodes whose KV cache is held (0 once every episode has ended)."""
        return len(self._states)

    # -- one turn ------------------------------------------------------------------
    def _act(self, episode: Episode) -> Reply:
        start = time.perf_counter()
        state, prefilled, reused = self._prompt(episode)
        prefill_s = time.perf_counter() - start
        context = len(state.session)
        retry = episode.feedback is not None
        ids, stopped = state.session.generate(
            self.max_new_tokens, self.stop_ids, suppress_ids=self.suppress_ids,
            temperature=self.retry_temperature if retry else 0.0,
            top_p=self.retry_top_p if retry else 1.0, generator=self.generator)
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        state.reply_ids, state.reply_text = ids, text
        latency = time.perf_counter() - start
        return Reply(text, {
            "prompt_tokens": prefilled, "completion_tokens": len(ids) + int(stopped),
            "context_tokens": context, "latency_s": latency, "prefill_s": prefill_s,
            "kv_reused": reused, "sampled": retry, "truncated": not stopped})

    def _prompt(self, episode: Episode) -> tuple[_EpisodeState, int, bool]:
        """The session positioned at the end of this turn's prompt; (state, tokens prefilled
        this turn, whether the cache was reused)."""
        history = episode.history()
        state = self._states.get(episode.id) if self.reuse_kv else None
        if state is not None and state.reply_text is not None \
                and len(history) == state.n_history:  # the pending reply was rejected
            state.session.rollback(state.prompt_mark)
            return state, 0, True
        messages = protocol.build_messages(episode, self.image_size)
        if state is not None and state.reply_text is not None:
            if len(history) == state.n_history + 1 and history[-1][0].raw_text == state.reply_text:
                fed = self._extend(state, messages, len(history))
                if fed is not None:
                    return state, fed, True
            else:
                log.debug("episode %s: cache out of step with the episode; prefilling", episode.id)
        state, fed = self._prefill(episode, messages, len(history))
        return state, fed, False

    def _prefill(self, episode: Episode, messages: list[dict],
                 n_history: int) -> tuple[_EpisodeState, int]:
        text = chat.render(self.processor, messages)
        images = chat.images_of(messages)
        inputs = chat.encode(self.processor, text, images)
        session = KVSession.for_model(self.model)
        session.feed(**inputs)
        state = _EpisodeState(session, text, len(images), n_history, session.mark())
        if self.reuse_kv:
            self._states[episode.id] = state
        return state, len(inputs["input_ids"])

    def _extend(self, state: _EpisodeState, messages: list[dict], n_history: int) -> int | None:
        """Feed what the accepted reply's turn adds; the count fed, or None if the template
        does not extend the previous prompt (then the caller prefills from scratch).

        The reply is kept as sampled when the re-rendered conversation tokenizes it the same
        way; otherwise the cache is cut back to the prompt's last special token and the text
        from there (the generation prompt's tail and the reply) is fed as a full prefill
        would tokenize it.
        """
        text = chat.render(self.processor, messages)
        suffix = chat.suffix_after_reply(state.prompt_text, state.reply_text, text)
        if suffix is None or not suffix.startswith(self._special):
            log.warning("the chat template does not extend the previous turn's prompt; "
                        "prefilling the whole conversation")
            return None
        images = chat.images_of(messages)[state.n_images:]
        inputs = chat.encode(self.processor, suffix, images)
        ids = inputs["input_ids"]
        tail = self._tail_text(state.prompt_text)
        head = self.tokenizer.encode(tail, add_special_tokens=False)
        both = self.tokenizer.encode(tail + state.reply_text, add_special_tokens=False)
        start = state.prompt_mark.length - len(head)
        if both != head + state.reply_ids:  # re-feed as the re-rendered conversation has it
            if state.session.ids[start:state.prompt_mark.length] != head:
                log.warning("the prompt's tail does not tokenize on its own; prefilling")
                return None
            state.session.rollback(state.prompt_mark)
            state.session.truncate(start)
            ids = both + ids
        state.session.feed(ids, inputs["pixel_values"], inputs["image_grid_thw"])
        state.prompt_text, state.n_history = text, n_history
        state.n_images += len(images)
        state.prompt_mark = state.session.mark()
        return len(ids)

    def _tail_text(self, prompt: str) -> str:
        """The prompt's text after its last special token (the generation prompt's tail)."""
        cut = max((prompt.rfind(t) + len(t) for t in self._special if t in prompt), default=0)
        return prompt[cut:]


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn tokens: the generation config's eos ids, the tokenizer's eos, endoftext."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    for token in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(ids)
