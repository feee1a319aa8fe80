"""msagent plugin: the ``gpt`` policy (any OpenAI-compatible chat-completions endpoint)."""

import msagent


@msagent.hookimpl
def msagent_register_policies(register):
    # lazy(): openai is imported when the policy is loaded, not when plugins are listed
    register("gpt", msagent.lazy("msagent_gpt.policy:GPTPolicy"),
             "OpenAI-compatible chat API (OpenAI, sglang, vLLM); native or in-prompt tools")
