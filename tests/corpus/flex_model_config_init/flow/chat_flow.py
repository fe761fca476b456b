# no "from __future__ import annotations": promptflow reads the annotations as classes
from pathlib import Path

from promptflow.core import AzureOpenAIModelConfiguration, Prompty

BASE_DIR = Path(__file__).absolute().parent


class ChatFlow:
    def __init__(self, model_config: AzureOpenAIModelConfiguration, max_total_token: int = 1024):
        self.model_config = model_config
        self.max_total_token = max_total_token

    def __call__(self, question: str) -> dict:
        prompty = Prompty.load(source=BASE_DIR / "chat.prompty", model={"configuration": self.model_config})
        return {"answer": prompty(question=question)}
