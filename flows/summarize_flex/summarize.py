"""Summarise a short text in one sentence with a chat model (a flex-flow class entry)."""

# No `from __future__ import annotations`: promptflow reads the init annotations as classes
# (param.annotation.__name__) to find connection-typed arguments.
from typing import TypedDict

from promptflow.connections import AzureOpenAIConnection
from promptflow.tracing import trace

PROMPT = "{text}\n\nSummarize the text above in one sentence."


class Summary(TypedDict):
    """The outputs; a TypedDict (not a plain dict) because promptflow serves only typed outputs."""

    summary: str
    words: int
    within_budget: bool


class Summarizer:
    """Init config: the connection (a name in the flow's connections), the deployment,
    the word budget and the sampling settings. Each call returns the summary's first sentence,
    its length in words and whether that length is within the budget."""

    def __init__(
        self,
        connection: AzureOpenAIConnection,
        deployment_name: str = "gpt-35-turbo",
        max_words: int = 25,
        temperature: float = 0.0,
        seed: int = 42,
    ) -> None:
        from openai import AzureOpenAI

        self.client = AzureOpenAI(
            api_key=connection.api_key,
            azure_endpoint=connection.api_base,
            api_version=connection.api_version or "2024-02-01",
        )
        self.deployment_name = deployment_name
        self.max_words = max_words
        self.temperature = temperature
        self.seed = seed

    @trace
    def __call__(self, text: str) -> Summary:
        reply = self.client.chat.completions.create(
            model=self.deployment_name,
            messages=[{"role": "user", "content": PROMPT.format(text=text)}],
            temperature=self.temperature,
            max_tokens=2 * self.max_words,
            seed=self.seed,
        )
        summary = _first_sentence(reply.choices[0].message.content or "")
        words = len(summary.split())
        return Summary(summary=summary, words=words, within_budget=words <= self.max_words)


def _first_sentence(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    end = line.find(". ")
    return line[: end + 1] if end >= 0 else line
