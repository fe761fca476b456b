# A flex function entry on the OpenAI Responses API (client.responses.create), the API that the newer
# OpenAI SDK samples and agent-framework's OpenAIChatClient call, with an OpenAI() client built from
# OPENAI_API_KEY / OPENAI_BASE_URL; it streams when the row asks, as chat front ends do.
import os

from openai import OpenAI


def answer(question: str, stream: bool = False) -> dict:
    client = OpenAI()
    request = dict(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), instructions="Answer with one word.",
                   input=question, max_output_tokens=12, temperature=0.0)
    if not stream:
        return {"answer": client.responses.create(**request).output_text}
    text = ""
    for event in client.responses.create(**request, stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
    return {"answer": text}
