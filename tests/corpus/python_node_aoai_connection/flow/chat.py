from openai import AzureOpenAI
from promptflow.connections import AzureOpenAIConnection
from promptflow.core import tool


@tool
def chat(question: str, llm: AzureOpenAIConnection, deployment: str) -> str:
    client = AzureOpenAI(azure_endpoint=llm.api_base, api_key=llm.api_key, api_version=llm.api_version)
    completion = client.chat.completions.create(
        model=deployment, max_tokens=12, temperature=0.0,
        messages=[{"role": "user", "content": question}],
    )
    return completion.choices[0].message.content or ""
