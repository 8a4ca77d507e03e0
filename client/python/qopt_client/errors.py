"""QoptError: the one exception the client raises, named by gRPC status code."""
import contextlib

import grpc


class QoptError(Exception):
    """A failed call or bad input.

    `code` is the gRPC status code's name ("NOT_FOUND", "INVALID_ARGUMENT",
    "UNAUTHENTICATED", ...), `message` the server's (or the client's) explanation.
    Local problems use the code the server would have used: a missing input file or an
    invalid recipe is INVALID_ARGUMENT, a corrupt download DATA_LOSS.
    """

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error):
        """The QoptError for a grpc.RpcError (which is also a grpc.Call)."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", details or "")


@contextlib.contextmanager
def translate_rpc_errors():
    """Turns grpc.RpcError raised inside the block into QoptError."""
    try:
        yield
    except grpc.RpcError as error:
        # The gRPC traceback adds threads and internals, not information.
        raise QoptError.from_rpc(error) from None
