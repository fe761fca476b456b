"""flows/sentiment migrated to an agent-framework workflow: classify (an LLM call) -> normalize.

The same two prompts as the DAG's variants (``prompt="few_shot"`` is variant_0, the default;
``"zero_shot"`` is variant_1), the same parameters, sent through chat completions to the model the
environment names (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``), so each row's request is the original's.
"""

from __future__ import annotations

import re

from agent_framework import Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient

FEW_SHOT = [
    ("system", "You are a sentiment classifier. Reply with one word: positive, negative or neutral."),
    ("user", "I love this!"),
    ("assistant", "positive"),
    ("user", "This is awful."),
    ("assistant", "negative"),
    ("user", "The bus leaves at noon."),
    ("assistant", "neutral"),
    ("user", "{text}"),
]
ZERO_SHOT = [
    ("system", "Answer with one word: positive, negative or neutral."),
    ("user", 'What is the sentiment of this text?\n"{text}"'),
]
PROMPTS = {"few_shot": (FEW_SHOT, 10), "zero_shot": (ZERO_SHOT, 30)}  # prompt, max_tokens (the variants)


class Classify(Executor):
    """The DAG's ``classify`` LLM node: one chat completion over the chosen prompt."""

    def __init__(self, prompt: str, temperature: float, model: str) -> None:
        super().__init__(id="classify")
        self.template, self.max_tokens = PROMPTS[prompt]
        self.temperature = temperature
        self.client = OpenAIChatCompletionClient(model=model)

    @handler
    async def classify(self, text: str, ctx: WorkflowContext[str]) -> None:
        messages = [Message(role, [content.replace("{text}", text)]) for role, content in self.template]
        options = {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": 42, "top_p": 1.0, "n": 1}
        response = await self.client.get_response(messages, options=options)
        await ctx.send_message(response.text)


class Normalize(Executor):
    """The DAG's ``normalize`` node: the first label word the answer mentions, else "unknown"."""

    def __init__(self) -> None:
        super().__init__(id="normalize")

    @handler
    async def normalize(self, answer: str, ctx: WorkflowContext[None, dict]) -> None:
        found = re.findall(r"\b(positive|negative|neutral)\b", (answer or "").lower())
        await ctx.yield_output({"category": found[0] if found else "unknown"})


def create_workflow(prompt: str = "few_shot", temperature: float = 0.0, model: str = "gpt-35-turbo"):
    """A fresh workflow (one per row): text in, ``{"category": ...}`` out."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt {prompt!r} is not one of {', '.join(PROMPTS)}")
    classify, normalize = Classify(prompt, temperature, model), Normalize()
    return WorkflowBuilder(start_executor=classify).add_edge(classify, normalize).build()
