import httpx
from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def ask(question: str, connection: CustomConnection) -> str:
    response = httpx.post(
        f"{connection.configs['endpoint'].rstrip('/')}/v1/chat/completions",
        headers={"api-key": connection.secrets["key"]},
        json={"model": connection.configs["model"], "max_tokens": 12, "temperature": 0.0,
              "messages": [{"role": "user", "content": question}]},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]
