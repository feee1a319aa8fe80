"""The recipes compose with verl's packaged Hydra configs, set only keys verl knows, and
build verl's config dataclasses; the tool and agent-loop YAMLs load through verl's loaders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"grpo": "ppo_trainer", "grpo_tiny": "ppo_trainer", "grpo_cpu": "ppo_trainer",
        "sft": "sft_trainer_engine", "sft_tiny": "sft_trainer_engine", "sft_cpu": "sft_trainer_engine"}
TINY = ("grpo_tiny", "grpo_cpu", "sft_tiny", "sft_cpu")
CPU = ("grpo_cpu", "sft_cpu")
#: dataclass fields verl's YAML leaves out (FSDPEngineConfig.mixed_precision, default None;
#: RolloutConfig.custom, verl's free-form extension point, default None)
OPTIONAL_FIELDS = ("engine.mixed_precision", "actor_rollout_ref.actor.fsdp_config.mixed_precision",
                   "actor_rollout_ref.rollout.custom")


def compose_config(name, overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def compose_verl(name):
    """verl's own packaged config, as its entry points compose it."""
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose(config_name=name)


def leaf_keys(node, prefix=""):
    for key, value in node.items():
        if key in ("hydra", "defaults"):
            continue
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path)
        else:
            yield path


def has_key(tree, dotted):
    if dotted.startswith(OPTIONAL_FIELDS):
        return True
    for part in dotted.split("."):
        if tree == {}:  # a free-form mapping in verl's config (override_config)
            return True
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def our_files(name):
    """The recipe file and the recipe/ files its defaults list names."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}
    recipes = [d for d in data.get("defaults", []) if isinstance(d, str) and d.startswith("recipe/")]
    return [CONFIGS / f"{name}.yaml", *(CONFIGS / f"{d}.yaml" for d in recipes)]


def our_keys(name):
    return {key for f in our_files(name) for key in leaf_keys(yaml.safe_load(f.read_text()) or {})}


@pytest.mark.parametrize("name", sorted(BASE))
def test_recipe_sets_only_keys_verl_knows(name):
    assert len(our_files(name)) >= 2
    base = OmegaConf.to_container(compose_verl(BASE[name]))
    assert sorted(key for key in our_keys(name) if not has_key(base, key)) == []
    config = compose_config(name)
    assert OmegaConf.select(config, "trainer.n_gpus_per_node") == (1 if name in TINY else 8)


def _engine(config):
    """The trained model's engine config (SFT engine, or the GRPO actor's FSDP config)."""
    return config.engine if "engine" in config else config.actor_rollout_ref.actor.fsdp_config


def _model(config):
    return config.model if "engine" in config else config.actor_rollout_ref.model


@pytest.mark.parametrize("name", sorted(BASE))
def test_master_weights_are_fp32(name):
    # bf16 parameters round AdamW's updates away (lr 1e-6: 0.96% of the weights changed after
    # two steps, against 50.8% in fp32); verl keeps fp32 masters and computes in bf16 through
    # mixed precision, unless a recipe overrides model_dtype
    from verl.utils.config import omega_conf_to_dataclass

    engine = _engine(compose_config(name))
    assert engine.model_dtype in ("fp32", "float32"), (name, engine.model_dtype)
    if name not in CPU:  # GPU recipes: bf16 compute by mixed precision
        mixed = engine.get("mixed_precision") or {}
        assert mixed.get("param_dtype", "bf16") == "bf16"
    if "engine" in compose_config(name):
        omega_conf_to_dataclass(engine)


@pytest.mark.parametrize("name", sorted(BASE))
def test_attention_needs_flash_attn_only_where_installed(name):
    # verl defaults to flash_attention_2, which neither verl nor the rollout engines install;
    # the tiny recipes run on sdpa (padded batches), the 8-GPU ones pack sequences
    # (use_remove_padding) and so need flash-attn, which the GPU install brings
    model = _model(compose_config(name))
    attention = model.override_config.get("attn_implementation")
    if name in TINY:
        assert (attention, model.use_remove_padding) == ("sdpa", False)
    else:
        assert (attention, model.use_remove_padding) == ("flash_attention_2", True)
        text = (CONFIGS.parent / "requirements" / "flash-attn.txt").read_text()
        assert re.search(r"^flash-attn==", text, re.M)


def test_turn_cap_is_the_inference_and_generation_cap():
    # one documented cap: at most max_turns executed actions (msagent.Agent, `msagent eval`),
    # the generator's max_actions plus its stop turn, and in RL one observation per action
    # and one more reply for the stop
    import attrs
    from msagent import Agent
    from msagent.generation.hybrid import HybridConfig

    actions = attrs.fields(Agent).max_turns.default
    assert attrs.fields(HybridConfig).max_actions.default == actions
    for name in ("grpo", "grpo_tiny", "grpo_cpu"):
        turns = compose_config(name).actor_rollout_ref.rollout.multi_turn
        assert (turns.max_user_turns, turns.max_assistant_turns) == (actions, actions + 1)


def test_grpo_has_the_paper_hyperparameters():
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_config("grpo")
    assert config.algorithm.adv_estimator == "grpo"
    assert not config.algorithm.use_kl_in_reward and not config.actor_rollout_ref.actor.use_kl_loss
    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    assert (rollout.name, rollout.n, rollout.prompt_length, rollout.response_length) == \
        ("sglang", 8, 4096, 8192)
    assert rollout.multi_turn.max_assistant_turns == 6 and rollout.multi_turn.enable
    assert rollout.agent.default_agent_loop == "msagent"
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert actor.optim.lr == 1e-6 and actor.ppo_mini_batch_size == 8
    assert config.data.train_batch_size == 8 and config.data.image_patch_size == 16
    assert config.reward.custom_reward_function.path == "pkg://msagent_training.reward"
    omega_conf_to_dataclass(config.algorithm)


def test_grpo_passes_verl_validation():
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    for name in ("grpo", "grpo_tiny", "grpo_cpu"):
        config = compose_config(name)
        assert not need_reference_policy(config) and not need_critic(config)
        validate_config(config=config, use_reference_policy=False, use_critic=False)


def test_sft_builds_verl_dataclasses():
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_config("sft")
    assert config.data.max_length == 12288 and config.data.pad_mode == "no_padding"
    assert omega_conf_to_dataclass(config.optim).lr == 1e-5
    omega_conf_to_dataclass(config.engine)
    assert "hf_model" in config.checkpoint.save_contents


def test_reward_function_loads_through_verl():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(compose_config("grpo"))
    result = fn(data_source="msagent", solution_str="", ground_truth="c", extra_info={
        "msagent_calls": ["add_bbox", "stop_action"], "msagent_ious": [0.5],
        "msagent_dices": [2 / 3], "msagent_scores": [0.9]})
    assert result["score"] == pytest.approx(0.2 + 0.8 * (0.25 + 1 / 3))


def test_tool_and_agent_loop_yamls_load_through_verl():
    from verl.tools.tool_registry import initialize_tools_from_config

    from msagent_training.backends import BackendConfig

    tools = initialize_tools_from_config(str(CONFIGS / "tools" / "litemedsam.yaml"))
    assert [t.name for t in tools] == ["add_bbox", "add_point", "stop_action"]
    for path in sorted((CONFIGS / "tools").glob("*.yaml")):
        for entry in OmegaConf.load(path).tools:
            config = OmegaConf.to_container(entry.config, resolve=True)
            known = {"type", "prompt_mode", "multimask", "policy_image_size",
                     *(f.name for f in __import__("attrs").fields(BackendConfig))}
            assert set(config) <= known, path.name
            BackendConfig.from_tool_config(config)
    (entry,) = OmegaConf.load(CONFIGS / "agent_loop.yaml")
    assert entry.name == "msagent"
    from hydra.utils import get_class

    from msagent_training.agent_loop import MSAgentLoop

    assert get_class(entry._target_) is MSAgentLoop
