"""msagent plugin: the ``qwen`` policy (a local Qwen2.5-VL / Qwen3-VL through transformers)."""

import msagent


@msagent.hookimpl
def msagent_register_policies(register):
    # lazy(): torch and transformers are imported when the policy is loaded, not when listed
    register("qwen", msagent.lazy("msagent_qwen.policy:QwenPolicy"),
             "Local Qwen-VL (default: the released MedSAM-Agent checkpoint), KV cache reused "
             "across turns")
