# A flex function entry that builds its own AzureOpenAI() client from AZURE_OPENAI_ENDPOINT,
# AZURE_OPENAI_API_KEY and OPENAI_API_VERSION, as promptflow's examples/flex-flows/basic (llm.py)
# and examples/flex-flows/environment-variable-connection-mapping do: no promptflow connection.
import os

from openai import AzureOpenAI


def answer(question: str) -> dict:
    if "AZURE_OPENAI_API_KEY" not in os.environ:
        raise Exception("Please specify environment variables: AZURE_OPENAI_API_KEY")
    client = AzureOpenAI(azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"])
    response = client.chat.completions.create(
        model=os.environ.get("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt-35-turbo"),
        messages=[{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": question}],
        max_tokens=12,
        temperature=0.0,
    )
    return {"answer": response.choices[0].message.content or ""}
