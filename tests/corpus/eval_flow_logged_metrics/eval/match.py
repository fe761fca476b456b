from promptflow.core import tool


@tool
def match(answer: str, truth: str) -> dict:
    answer, truth = answer.strip().lower(), truth.strip().lower()
    return {"exact_match": int(answer == truth), "partial_match": int(truth in answer or answer in truth),
            "unscored": int(answer == "i do not know")}
