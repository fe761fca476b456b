from typing import List


class Grader:
    def __call__(self, groundtruth: str, prediction: str) -> dict:
        return {"correct": int(groundtruth.lower() == prediction.lower())}

    def __aggregate__(self, line_results: List[dict]) -> dict:
        return {"exact_rate": sum(line.correct for line in line_results) / len(line_results)}
