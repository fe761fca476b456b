# A flex class entry that loads a prompty whose model configuration comes from ${env:AZURE_OPENAI_*}
# (the GenAIOps template's named_entity_recognition flow), with "stream: true" in the prompty's
# parameters as promptflow's examples/flex-flows/chat-stream has: the answer arrives in pieces.
import pathlib

from promptflow.core import Prompty

HERE = pathlib.Path(__file__).parent.resolve()


class EntityExtraction:
    def __init__(self):
        override_model = {
            "configuration": {
                "azure_deployment": "${env:AZURE_OPENAI_DEPLOYMENT}",
                "api_key": "${env:AZURE_OPENAI_API_KEY}",
                "api_version": "${env:AZURE_OPENAI_API_VERSION}",
                "azure_endpoint": "${env:AZURE_OPENAI_ENDPOINT}",
            }
        }
        self.prompty = Prompty.load(source=HERE / "answer.prompty", model=override_model)

    def __call__(self, question: str) -> dict:
        pieces = self.prompty(question=question)
        return {"answer": "".join(pieces)}
