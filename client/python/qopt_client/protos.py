"""The generated qopt.v1 modules (protoc output, made by the build's qopt_python target)."""
try:
    from qopt.v1 import recipe_pb2, service_pb2, service_pb2_grpc  # noqa: F401
except ImportError as error:
    raise ImportError(
        "qopt_client needs the generated qopt.v1 modules: build the qopt_python target "
        "(cmake --build BUILD --target qopt_python) and put BUILD/python on PYTHONPATH"
    ) from error

JobState = service_pb2.JobState
FINAL_STATES = frozenset({service_pb2.SUCCEEDED, service_pb2.FAILED, service_pb2.CANCELLED})


def is_finished(state):
    """True for SUCCEEDED, FAILED and CANCELLED."""
    return state in FINAL_STATES


def state_name(state):
    """The state's name: "RUNNING" for service_pb2.RUNNING."""
    return service_pb2.JobState.Name(state)


def parse_state(state):
    """A JobState value from a name ("succeeded" or "SUCCEEDED"), a value or None (= all)."""
    if state is None:
        return service_pb2.JOB_STATE_UNSPECIFIED
    if isinstance(state, str):
        return service_pb2.JobState.Value(state.upper())
    service_pb2.JobState.Name(state)  # ValueError for a number that names no state
    return state
