"""The msagent agent loop inside verl's own AgentLoopWorker, with a scripted generation server:
the token stream, loss mask and images equal a direct render of the same conversation, and
the reward equals msagent's on the core agent's trajectory for the same replies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msagent
import numpy as np
import pytest
from msagent import protocol

from msagent_training.episode import CALLS, EPISODES, IOUS
from msagent_training.reward import compute_score, trajectory_extra_info
from msagent_training.testing import SCRIPT, ScriptedPolicy

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOKENS_PER_IMAGE = 256


class ScriptedServer:
    """Stands in for verl's LLM server client: answers each request with the next scripted
    reply, tokenized, ending with <|im_end|> (what a Qwen model stops on). Trajectories are
    told apart by their first image (verl's request id is the same for all of them under
    ``full_determinism``)."""

    def __init__(self, tokenizer, replies, canonical=True):
        self.tokenizer, self.replies, self.canonical = tokenizer, replies, canonical
        self.turns: dict[str, int] = {}
        self.requests: list[tuple[str, str, list[int], int]] = []
        self.sent: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """The reply's tokens: canonical, or one token per character (what a sampling model
        may emit: the same text, other ids)."""
        if self.canonical:
            return self.tokenizer.encode(text, add_special_tokens=False)
        return [i for ch in text for i in self.tokenizer.encode(ch, add_special_tokens=False)]

    async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
        import hashlib

        from verl.workers.rollout.replica import TokenOutput

        images = kwargs.get("image_data") or []
        key = hashlib.sha256(images[0].tobytes()).hexdigest()
        turn = self.turns.get(key, 0)
        self.turns[key] = turn + 1
        self.requests.append((key, request_id, list(prompt_ids), len(images)))
        ids = self.encode(self.replies[turn])
        self.sent.setdefault(key, []).extend(ids + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")])
        return TokenOutput(token_ids=ids + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")],
                           log_probs=[-0.5] * (len(ids) + 1), num_preempted=0)


class RewardHandle:
    """verl's RewardLoopWorker in this process, called the way the agent loop calls its Ray
    actor handle (``await handle.compute_score.remote(data)``)."""

    def __init__(self, config):
        from types import SimpleNamespace

        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

        self.worker = RewardLoopWorker(config)
        self.compute_score = SimpleNamespace(remote=self.worker.compute_score)


@pytest.fixture(scope="module")
def rollout(parquet_dir, tiny_model_dir, tiny_processor, tmp_path_factory):
    """run(overrides) -> (output, server, dataset, config): our loop inside verl's
    AgentLoopWorker on the first two RL rows, with the scripted server."""
    from hydra import compose, initialize_config_dir
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.protocol import DataProto
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    tokenizer, processor = tiny_processor
    cache = tmp_path_factory.mktemp("verl-cache")

    def run(overrides=(), replies=SCRIPT, reward_loop=False, canonical=True):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
            config = compose("grpo_tiny", overrides=[
                f"actor_rollout_ref.model.path={tiny_model_dir}",
                f"actor_rollout_ref.rollout.multi_turn.tool_config_path={CONFIGS}/tools/litemedsam.yaml",
                f"actor_rollout_ref.rollout.agent.agent_loop_config_path={CONFIGS}/agent_loop.yaml",
                f"data.train_files={parquet_dir / 'rl.parquet'}", f"+data.cache_dir={cache}",
                "data.max_prompt_length=1024", "data.max_response_length=2048", *overrides,
            ])
        dataset = RLHFDataset(config.data.train_files, tokenizer, config.data, processor)
        batch = DataProto.from_single_dict(collate_fn([dataset[0], dataset[1]]))
        server = ScriptedServer(tokenizer, replies, canonical)
        if reward_loop:  # verl's reward managers keep the loop current at construction
            from verl.utils.ray_utils import get_event_loop

            worker = AgentLoopWorker(config, server, reward_loop_worker_handles=[RewardHandle(config)])
            output = get_event_loop().run_until_complete(worker.generate_sequences(batch))
        else:
            output = asyncio.run(AgentLoopWorker(config, server).generate_sequences(batch))
        return output, server, dataset, config

    return run


@pytest.fixture(scope="module")
def worker_output(rollout):
    return rollout()


def unpadded(output, i):
    prompt = output.batch["prompts"][i]
    response = output.batch["responses"][i]
    attention = output.batch["attention_mask"][i]
    p_len = prompt.shape[0]
    prompt_ids = prompt[attention[:p_len].bool()].tolist()
    valid = attention[p_len:].bool()
    return prompt_ids, response[valid].tolist(), output.batch["response_mask"][i][valid].tolist()


def test_rollout_matches_a_direct_render(worker_output, cases, segmenter, tiny_processor):
    output, server, dataset, _ = worker_output
    tokenizer, processor = tiny_processor
    for i in range(2):
        case = cases[i]
        trajectory = msagent.Agent(ScriptedPolicy(SCRIPT), segmenter, max_turns=5).run(
            case.image, case.target, case.ground_truth)
        masks = [s.mask for s in trajectory.executed_steps]
        # the conversation as msagent's inference builds it, rendered in one go
        messages = dataset[i]["raw_prompt"]
        overlays = [protocol.policy_image(case.image, m) for m in masks]
        for turn, reply in enumerate(SCRIPT):
            messages.append({"role": "assistant", "content": reply})
            if turn < len(overlays):
                messages.append(protocol.user_message(overlays[turn], protocol.FOLLOW_UP_TEXT))
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        images = [messages[1]["content"][0]["image"], *overlays]
        direct = processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()
        prompt_ids, response_ids, mask = unpadded(output, i)
        assert prompt_ids + response_ids == direct[:-1]  # a reply ends at <|im_end|>, no "\n"
        # loss mask: exactly the generated replies
        generated = [t for t, m in zip(response_ids, mask, strict=True) if m]
        assert tokenizer.decode(generated) == "".join(r + "<|im_end|>" for r in SCRIPT)
        image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert sum(1 for t in prompt_ids if t == image_pad) == TOKENS_PER_IMAGE
        assert sum(1 for t in response_ids if t == image_pad) == len(overlays) * TOKENS_PER_IMAGE
        # images handed to the trainer: the first image, then the overlays, in order
        got = output.non_tensor_batch["multi_modal_inputs"][i]["image_grid_thw"].tolist()
        assert got == [[1, 32, 32]] * (1 + len(overlays))
        # record for the reward; reward equals the core's on the core trajectory
        extra = {k: output.non_tensor_batch[k][i] for k in (CALLS, IOUS, "msagent_dices",
                                                            "msagent_scores")}
        assert extra[CALLS] == [protocol.parse_action(r).kind for r in SCRIPT]
        assert extra[IOUS] == [s.iou for s in trajectory.executed_steps]
        expected = msagent.MedSAMReward().score(trajectory)
        assert compute_score("msagent", "", case.id, extra)["score"] == pytest.approx(expected.score)
        assert compute_score("msagent", "", case.id, trajectory_extra_info(trajectory)) == \
            compute_score("msagent", "", case.id, extra)


def test_server_saw_growing_prompts_with_images(worker_output):
    _, server, _, _ = worker_output
    by_request: dict[str, list] = {}
    for _, request_id, prompt_ids, n_images in server.requests:
        by_request.setdefault(request_id, []).append((prompt_ids, n_images))
    assert len(by_request) == 2
    for turns in by_request.values():
        assert [n for _, n in turns] == [1, 2, 3, 4]  # stop on the 4th reply ends it
        for (before, _), (after, _) in zip(turns, turns[1:], strict=False):
            assert after[:len(before)] == before  # append-only token stream
    assert len(EPISODES) == 0  # the loop dropped both episode states


def test_position_ids_and_masks_have_trainer_shapes(worker_output):
    output, _, _, config = worker_output
    batch = output.batch
    total = config.data.max_prompt_length + config.data.max_response_length
    assert batch["input_ids"].shape == (2, total)
    assert batch["position_ids"].shape == (2, 4, total)
    assert np.isin(batch["response_mask"].numpy(), [0, 1]).all()


def test_full_determinism_keeps_episodes_apart(rollout, worker_output):
    # verl gives every trajectory request id "det-0" under full_determinism; the episodes
    # (image, prompts, IoUs) must still be per trajectory, as without it
    output, server, _, _ = rollout(["actor_rollout_ref.rollout.full_determinism=true"])
    assert {request_id for _, request_id, _, _ in server.requests} == {"det-0"}
    reference = worker_output[0]
    for key in (CALLS, IOUS, "msagent_dices"):
        assert list(output.non_tensor_batch[key]) == list(reference.non_tensor_batch[key])
    ious = output.non_tensor_batch[IOUS]
    assert len(ious[0]) == len(ious[1]) == 3 and ious[0] != ious[1]
    assert len(EPISODES) == 0


@pytest.fixture(scope="module")
def rewarded(rollout):
    return rollout(reward_loop=True)


def test_reward_goes_through_verls_reward_loop_into_the_metrics(rewarded, worker_output):
    # the reward as training computes it: verl's RewardLoopWorker loads compute_score from
    # reward.custom_reward_function, scores each finished trajectory inside the agent loop,
    # and the breakdown rides along as reward_extra_info into the batch; verl's validation
    # metrics (process_validation_metrics, logged every trainer.test_freq steps) cover it
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    from msagent_training.reward import METRIC_KEYS

    output, _, _, config = rewarded
    assert config.trainer.test_freq > 0
    expected = [compute_score("msagent", "", "", {k: worker_output[0].non_tensor_batch[k][i]
                                                  for k in (CALLS, IOUS, "msagent_dices",
                                                            "msagent_scores")})
                for i in range(2)]
    scores = output.batch["rm_scores"].sum(dim=1).tolist()
    assert scores == pytest.approx([e["score"] for e in expected])
    extra = [k for k in METRIC_KEYS if k != "score"]
    for key in extra:
        assert list(output.non_tensor_batch[key]) == pytest.approx([e[key] for e in expected])
    metrics = process_validation_metrics(
        ["msagent", "msagent"], ["a", "b"],
        {"reward": scores, **{k: list(output.non_tensor_batch[k]) for k in extra}})
    assert set(metrics["msagent"]) == {"reward", *extra}
    assert metrics["msagent"]["quality"]["mean@1"] == pytest.approx(
        np.mean([e["quality"] for e in expected]))


def test_grpo_pieces_on_our_rollouts(rewarded):
    # verl's own GRPO pieces on the rollouts above (the two trajectories taken as one group):
    # outcome advantages, the clipped policy loss masked to the generated tokens, no KL
    import torch
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.utils import need_reference_policy

    output, _, _, config = rewarded
    assert not need_reference_policy(config)  # no KL loss, no KL reward: no reference model
    assert config.algorithm.adv_estimator == "grpo" and config.algorithm.norm_adv_by_std_in_grpo
    rewards, mask = output.batch["rm_scores"], output.batch["response_mask"]
    assert (rewards != 0).sum(dim=1).tolist() == [1, 1]  # one outcome reward per trajectory
    estimator = core_algos.get_adv_estimator_fn(config.algorithm.adv_estimator)
    advantages, _ = estimator(token_level_rewards=rewards, response_mask=mask,
                              index=np.array(["group", "group"]), norm_adv_by_std_in_grpo=True)
    scores = rewards.sum(dim=1)
    expected = (scores - scores.mean()) / (scores.std() + 1e-6)
    for i in range(2):
        on = mask[i].bool()
        assert torch.allclose(advantages[i][on], expected[i].expand(int(on.sum())), atol=1e-5)
        assert (advantages[i][~on] == 0).all()  # observation tokens (overlays) get nothing
    old = output.batch["rollout_log_probs"]
    assert (old[mask.bool()] == -0.5).all()  # the server's log-probs, on generated tokens only

    def loss(log_prob):
        return core_algos.compute_policy_loss(old, log_prob, advantages, mask, cliprange=0.2,
                                              loss_agg_mode="token-mean")[0]

    on_policy = loss(old.clone())
    assert on_policy.item() == pytest.approx(-(advantages * mask).sum().item() / mask.sum().item(),
                                             abs=1e-6)
    shifted = old.clone()
    shifted[~mask.bool()] += 3.0  # changing the context tokens' log-probs changes nothing
    assert loss(shifted).item() == pytest.approx(on_policy.item(), abs=1e-7)
    log_prob = old.clone().requires_grad_(True)
    loss(log_prob).backward()
    assert (log_prob.grad[~mask.bool()] == 0).all() and (log_prob.grad[mask.bool()] != 0).any()


def test_non_canonical_reply_tokens_are_kept_exactly(rollout, worker_output, tiny_processor):
    # a sampled reply need not be the canonical tokenization of its text; the trainer must see
    # the ids the model produced (re-tokenizing would train on tokens never sampled)
    tokenizer, _ = tiny_processor
    output, server, _, _ = rollout(canonical=False)
    canonical = sum(len(tokenizer.encode(r, add_special_tokens=False)) + 1 for r in SCRIPT)
    for i in range(2):
        _, response_ids, mask = unpadded(output, i)
        generated = [t for t, m in zip(response_ids, mask, strict=True) if m]
        assert len(generated) > canonical  # really non-canonical
        assert generated in list(server.sent.values())
        assert tokenizer.decode(generated) == "".join(r + "<|im_end|>" for r in SCRIPT)
    # the loop parsed the same calls and the tools made the same masks
    for key in (CALLS, IOUS):
        assert list(output.non_tensor_batch[key]) == list(worker_output[0].non_tensor_batch[key])


def test_reward_breakdown_reaches_each_training_steps_metrics(rewarded, worker_output):
    # the recipe's trainer mode is verl's sync trainer whose step metrics add the breakdown
    # from each trajectory's extra_fields["reward_extra_info"] (what verl's reward loop wrote)
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from msagent_training import grpo
    from msagent_training.metrics import reward_metrics
    from msagent_training.trainer import register

    output, _, _, config = rewarded
    trainer = register()
    assert get_trainer_cls(config.trainer.v1.trainer_mode) is trainer
    assert issubclass(trainer, PPOTrainerSync) and "_compute_metrics" in vars(trainer)
    assert grpo.TaskRunner.__ray_metadata__.modified_class.run is not None
    metrics = reward_metrics(output.non_tensor_batch["reward_extra_info"])
    expected = {key: [float(v) for v in output.non_tensor_batch[key]]
                for key in ("format", "quality", "penalty", "bonus", "turns", "iou", "dice")}
    for key, values in expected.items():
        assert metrics[f"reward/{key}/mean"] == pytest.approx(np.mean(values))
        assert metrics[f"reward/{key}/max"] == pytest.approx(max(values))
