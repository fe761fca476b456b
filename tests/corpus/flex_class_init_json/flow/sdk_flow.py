# no "from __future__ import annotations": promptflow reads the annotations as classes
from openai import AzureOpenAI
from promptflow.core import AzureOpenAIModelConfiguration


class SdkChat:
    def __init__(self, model_config: AzureOpenAIModelConfiguration, max_tokens: int = 256):
        self.client = AzureOpenAI(azure_endpoint=model_config.azure_endpoint, api_key=model_config.api_key,
                                  api_version=model_config.api_version)
        self.deployment = model_config.azure_deployment
        self.max_tokens = max_tokens

    def __call__(self, question: str) -> dict:
        completion = self.client.chat.completions.create(
            model=self.deployment, max_tokens=self.max_tokens, temperature=0.0,
            messages=[{"role": "user", "content": question}],
        )
        return {"answer": completion.choices[0].message.content or ""}
