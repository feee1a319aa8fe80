"""A token-in/token-out generation server on transformers ``generate``: verl's rollout on a CPU.

verl 0.9.1 generates every rollout through a *server* (vLLM, sglang or TensorRT-LLM) that the
agent loop calls as ``generate(request_id=, prompt_ids=, sampling_params=, image_data=, ...)``
and that answers a :class:`verl.workers.rollout.replica.TokenOutput`. :class:`HFGenerationServer`
is that server on plain transformers, so GRPO runs where none of the three engines installs (a
CPU, a laptop, CI) or on one CUDA GPU without them. It follows vLLM's server where verl relies on
it:

- the prompt ids already hold the image-pad runs the processor expanded; the images come as
  ``image_data`` and go through the same processor's image processor here. The runs must match
  the images (:class:`RolloutInputError` otherwise: a silent mismatch would train on garbage);
- no ``max_tokens`` is sent: the cap is vLLM's,
  ``min(response_length, prompt_length + response_length - len(prompt_ids))``, within
  ``max_model_len``;
- ``stop_token_ids`` end generation like the model's EOS, and the stop token is returned;
- log-probs are those of the *processed* logits (after temperature, top-k, top-p), as verl's
  ``logprobs_mode: processed_logprobs`` asks of vLLM;
- weight updates arrive as full named tensors (:meth:`update_weights`); unknown names or
  shapes are refused (:class:`WeightUpdateError`), never half-applied.

What it does not do: batching (requests run one at a time, in arrival order), KV-cache reuse
across turns, sleep/wake memory release (the life-cycle calls are accepted and do nothing),
videos, LoRA adapters, tensor/pipeline parallelism. See ``training/README.md``.

This module has no Ray in it; :mod:`msagent_training.hf_rollout` makes it a Ray actor.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)


class RolloutInputError(ValueError):
    """A generation request the server cannot honour (images vs image-pad runs, videos, length)."""


class WeightUpdateError(ValueError):
    """A weight update that does not fit the served model (unknown names, wrong shapes)."""


def max_new_tokens(prompt_len: int, *, prompt_length: int, response_length: int,
                   max_model_len: int, requested: int | None = None) -> int:
    """vLLM's server rule (verl's ``vllm_async_server.generate``): a requested ``max_tokens``,
    else the response cap and what is left of the multi-turn budget; within [1, the room left
    in the model's context]."""
    room = max_model_len - prompt_len
    if room < 1:
        raise RolloutInputError(f"the prompt has {prompt_len} tokens and leaves no room to generate "
                                f"within max_model_len={max_model_len}; raise "
                                "actor_rollout_ref.rollout.max_model_len or shorten the episode")
    budget = (min(response_length, prompt_length + response_length - prompt_len)
              if requested is None else int(requested))
    return max(1, min(budget, room))


def image_pad_runs(prompt_ids: Sequence[int], pad_id: int) -> list[int]:
    """Lengths of the runs of ``pad_id`` in ``prompt_ids``, in order (one pass)."""
    runs: list[int] = []
    previous = None
    for token in prompt_ids:
        if token == pad_id:
            if previous == pad_id:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = token
    return runs


def weights_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, by name: equal digests mean
    bit-identical weights (the tests compare the server with the saved checkpoint this way)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _top_k(value: Any) -> int | None:
    top_k = int(value) if value is not None else -1
    return None if top_k <= 0 else top_k  # verl/vLLM: -1 = no top-k; transformers: None


class HFGenerationServer:
    """One model, one request at a time (see the module docstring).

    ``model`` is a transformers generative model (``eval()``, on its device), ``processor`` the
    model's processor (or tokenizer, for text-only models). ``prompt_length``,
    ``response_length`` and ``max_model_len`` are the rollout config's.
    """

    def __init__(self, model, processor, *, prompt_length: int, response_length: int,
                 max_model_len: int | None = None, seed: int | None = None,
                 weights_digest_log: bool = False) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt_length = int(prompt_length)
        self.response_length = int(response_length)
        config = getattr(model.config, "text_config", model.config)
        self.max_model_len = int(max_model_len or config.max_position_embeddings)
        self.seed = seed
        self.weights_digest_log = weights_digest_log
        self.global_steps: int | None = None
        self.eos_ids = _ids(getattr(getattr(model, "generation_config", None), "eos_token_id", None)
                            or self.tokenizer.eos_token_id)
        # Only what verl asks for may shape sampling: generate fills every unset field from the
        # model's generation_config (Qwen3-VL ships top_k=20, top_p=0.8; others min_p, ...)
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig(eos_token_id=self.eos_ids or None,
                                                   pad_token_id=self.tokenizer.pad_token_id)
        self.vocab_size = int(config.vocab_size)
        self.image_pad_id = getattr(model.config, "image_token_id", None)
        self.merge_size = int(getattr(getattr(processor, "image_processor", None), "merge_size", 1) or 1)
        self._lock = threading.Lock()  # generate and update_weights never overlap
        self._abort = threading.Event()

    # ----- generation -------------------------------------------------------------------------

    def generate(self, prompt_ids: Sequence[int], sampling_params: Mapping[str, Any],
                 image_data: Sequence[Any] | None = None, video_data: Any = None,
                 mm_processor_kwargs: Mapping[str, Any] | None = None, **unused: Any):
        """One response for ``prompt_ids`` (a verl ``TokenOutput``); blocking."""
        from verl.workers.rollout.replica import TokenOutput

        if video_data or unused.get("audio_data"):
            raise RolloutInputError("the hf rollout engine takes images only, not videos or audio")
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids or min(prompt_ids) < 0 or max(prompt_ids) >= self.vocab_size:
            raise RolloutInputError(f"prompt ids must be a non-empty list of token ids below "
                                    f"{self.vocab_size}, got {len(prompt_ids)} ids")
        params = dict(sampling_params)
        explicit = params.pop("max_tokens", params.pop("max_new_tokens", None))
        cap = max_new_tokens(len(prompt_ids), prompt_length=self.prompt_length,
                             response_length=self.response_length, max_model_len=self.max_model_len,
                             requested=explicit)
        inputs = self._model_inputs(prompt_ids, list(image_data or []), dict(mm_processor_kwargs or {}))
        with self._lock:
            if self._abort.is_set():
                return TokenOutput(token_ids=[], stop_reason="aborted",
                                   extra_fields={"global_steps": self.global_steps})
            seed = params.get("seed")
            seed = self.seed if seed is None else seed
            if seed is not None:
                torch.manual_seed(int(seed))
            tokens, log_probs, aborted = self._sample(inputs, params, cap)
        return TokenOutput(token_ids=tokens, log_probs=log_probs if params.get("logprobs") else None,
                           stop_reason="aborted" if aborted else "completed", num_preempted=0,
                           extra_fields={"global_steps": self.global_steps})

    def _model_inputs(self, prompt_ids: list[int], images: list[Any],
                      processor_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = self.model.device
        inputs: dict[str, torch.Tensor] = {
            "input_ids": torch.tensor([prompt_ids], dtype=torch.long, device=device),
            "attention_mask": torch.ones(1, len(prompt_ids), dtype=torch.long, device=device)}
        runs = image_pad_runs(prompt_ids, self.image_pad_id) if self.image_pad_id is not None else []
        if not images:
            if runs:
                raise RolloutInputError(f"the prompt has {len(runs)} image-pad run(s) but no images "
                                        "came with it (image_data is empty)")
            return inputs
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None or self.image_pad_id is None:
            raise RolloutInputError(f"{type(self.model).__name__} takes no images, but the request "
                                    f"has {len(images)}")
        processed = image_processor(images=images, return_tensors="pt", **processor_kwargs)
        grid = processed["image_grid_thw"]
        expected = (grid.prod(-1) // self.merge_size**2).tolist()
        if runs != expected:
            raise RolloutInputError(
                f"the prompt's image-pad runs {runs} do not match the {len(images)} image(s), which "
                f"need {expected} tokens each: the prompt and image_data come from different images "
                "or processor settings (check data.mm_processor_kwargs / max_pixels)")
        inputs["pixel_values"] = processed["pixel_values"].to(device, self.model.dtype)
        inputs["image_grid_thw"] = grid.to(device)
        # Which tokens are image tokens: Qwen-VL's multimodal RoPE needs it (transformers >= 5.3
        # takes it from here; without it generate silently uses text-only positions, which is
        # not what the actor computes: verl's agent loop builds the same mask, agent_loop.py:936)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_pad_id).long()
        return inputs

    def _sample(self, inputs: dict[str, torch.Tensor], params: Mapping[str, Any], cap: int
                ) -> tuple[list[int], list[float], bool]:
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        abort = self._abort

        class _Abort(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), abort.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        temperature = float(params.get("temperature", 1.0) or 0.0)
        stops = sorted({*_ids(params.get("stop_token_ids")), *self.eos_ids})
        pad = self.tokenizer.pad_token_id
        want_log_probs = bool(params.get("logprobs"))
        sampling = dict(do_sample=True, temperature=temperature,
                        top_p=float(params.get("top_p", 1.0) or 1.0),
                        top_k=_top_k(params.get("top_k")) or 0) if temperature > 0 else dict(do_sample=False)
        config = GenerationConfig(
            max_new_tokens=cap, eos_token_id=stops or None, output_scores=want_log_probs,
            return_dict_in_generate=True, use_cache=True,
            pad_token_id=pad if pad is not None else (stops[0] if stops else 0),
            repetition_penalty=float(params.get("repetition_penalty", 1.0) or 1.0), **sampling)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=config,
                                         stopping_criteria=StoppingCriteriaList([_Abort()]))
        new = output.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        log_probs = []
        if want_log_probs:  # of the processed scores (temperature, top-k, top-p applied)
            log_probs = [float(torch.log_softmax(step[0].float(), -1)[token])
                         for step, token in zip(output.scores, new, strict=True)]
        return new, log_probs, abort.is_set()

    # ----- weights ---------------------------------------------------------------------------

    def update_weights(self, named_tensors: Mapping[str, torch.Tensor],
                       global_steps: int | None = None) -> dict[str, Any]:
        """Copy full tensors into the model by name, all or nothing; return a small report."""
        params = dict(self.model.state_dict())
        unknown = sorted(set(named_tensors) - set(params))
        if unknown:
            raise WeightUpdateError(
                f"{len(unknown)} weight name(s) the served model does not have, e.g. {unknown[:3]}; "
                f"it has e.g. {sorted(params)[:3]}. The actor and the rollout must load the same "
                "architecture (actor_rollout_ref.model.path)")
        wrong = [(n, tuple(t.shape), tuple(params[n].shape)) for n, t in named_tensors.items()
                 if tuple(t.shape) != tuple(params[n].shape)]
        if wrong:
            raise WeightUpdateError(f"{len(wrong)} weight(s) of the wrong shape, e.g. {wrong[:3]} "
                                    "(name, sent, served)")
        with self._lock, torch.no_grad():
            for name, tensor in named_tensors.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
            self.global_steps = global_steps
        missing = len(params) - len(named_tensors)
        if missing:
            log.warning("hf rollout weight update left %d of %d tensors as they were (not sent)",
                        missing, len(params))
        report: dict[str, Any] = {"tensors": len(named_tensors), "missing": missing,
                                  "global_steps": global_steps}
        if self.weights_digest_log:
            report["digest"] = weights_digest(self.model.state_dict().items())
            log.warning("hf rollout weights updated: step=%s tensors=%d sha256=%s",
                        global_steps, len(named_tensors), report["digest"])
        return report

    # ----- life cycle (verl calls these on every server) --------------------------------------

    def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        self._abort.set()
        return {"aborted_count": 0, "request_ids": []}

    def resume_generation(self) -> None:
        self._abort.clear()


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]
