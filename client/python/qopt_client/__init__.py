"""qopt_client: the Python client of qopt-server (gRPC API qopt.v1).

    from qopt_client import Client

    with Client("127.0.0.1:50051", token="...") as qopt:
        qopt.create_model("resnet18", "resnet18.pt", replace=True)
        job = qopt.submit({"model": {"name": "resnet18"}, ...})
        job = qopt.wait(job.id, on_event=print)
        metrics = qopt.report(job.id)["metrics"]

Needs the generated modules qopt.v1.*_pb2 (the build's qopt_python target writes them,
with this package, to BUILD/python), grpcio and protobuf.
"""
from .blobs import is_sha256, sha256_file
from .client import Client
from .errors import QoptError
from .protos import FINAL_STATES, JobState, is_finished, recipe_pb2, service_pb2, state_name

Recipe = recipe_pb2.Recipe
Job = service_pb2.Job
JobEvent = service_pb2.JobEvent

__all__ = [
    "Client", "QoptError", "Recipe", "Job", "JobEvent", "JobState", "FINAL_STATES",
    "is_finished", "state_name", "is_sha256", "sha256_file", "recipe_pb2", "service_pb2",
]
