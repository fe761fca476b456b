# The GenAIOps template's script-only evaluator folder (function_flows/ and flex_flows/ use cases:
# flows/eval-flow/eval_custom.py, no flow file): a whole-run hook that its evaluation step never
# calls (it hands the folder to pf as a flow). pytest-promptflow refuses this evaluator alone, in one
# line, and runs the rest of the experiment.


def eval_use_case(run_name, data_id, column_mapping):
    print(f"custom evaluation of {run_name} on {data_id} with {column_mapping}")
