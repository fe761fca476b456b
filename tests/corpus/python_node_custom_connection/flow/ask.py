import httpx
from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def ask(question: str, conn: CustomConnection) -> str:
    """Chat completions at the connection's endpoint, the way a hand-written tool calls a model."""
    response = httpx.post(
        f"{conn.configs['api_base'].rstrip('/')}/v1/chat/completions",
        headers={"Authorization": f"Bearer {conn.secrets['api_key']}"},
        json={"model": "gpt-35-turbo", "max_tokens": 12, "temperature": 0.0,
              "messages": [{"role": "user", "content": question}]},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]
