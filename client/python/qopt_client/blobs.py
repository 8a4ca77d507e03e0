"""Content-addressed uploads: sha256 first, then chunks of at most 1 MiB, resumed from the
server's committed offset after a broken stream, skipped when the server has the blob."""
import hashlib
import re
import time

import grpc

from .errors import QoptError
from .protos import service_pb2

CHUNK_BYTES = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Waits between attempts; UNAVAILABLE (stream broke) and ABORTED (the same blob is being
# uploaded by another call of this tenant) are worth retrying.
_RETRY_DELAYS_S = (1, 2, 4)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


def is_sha256(text):
    """True for 64 lowercase hex digits, the way the service names blobs."""
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


def sha256_file(path):
    """(sha256 hex, size in bytes) of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class _Chunks:
    """The Upload request stream. gRPC reads it on its own thread and turns an exception
    into a bare CANCELLED, so a local read error is kept here to be reported instead."""

    def __init__(self, path, sha256, size, offset, on_progress):
        self.path, self.sha256, self.size, self.offset = path, sha256, size, offset
        self.on_progress = on_progress
        self.error = None

    def __iter__(self):
        yield service_pb2.UploadRequest(
            header=service_pb2.UploadHeader(sha256=self.sha256, size=self.size, offset=self.offset))
        done = self.offset
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                    yield service_pb2.UploadRequest(chunk=block)
                    done += len(block)
                    if self.on_progress:
                        self.on_progress(done, self.size)
        except OSError as error:
            self.error = error
            raise


def upload_file(stub, metadata, timeout, path, on_progress=None):
    """Uploads `path` through BlobService `stub`; returns its sha256.

    on_progress(done_bytes, total_bytes) is called first with the offset the upload
    starts from (the size when the server has the blob already), then after each chunk.
    """
    try:
        sha256, size = sha256_file(path)
    except OSError as error:
        raise QoptError("INVALID_ARGUMENT", f"cannot read {path}: {error.strerror}") from None
    attempts = len(_RETRY_DELAYS_S) + 1
    for attempt in range(attempts):
        if attempt:
            time.sleep(_RETRY_DELAYS_S[attempt - 1])
        last = attempt == attempts - 1
        try:
            status = stub.GetUploadStatus(service_pb2.GetUploadStatusRequest(sha256=sha256),
                                          metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            # A server that is not there before any byte was sent fails fast; retries are
            # for streams that broke midway.
            if attempt == 0 or last or error.code() not in _RETRYABLE:
                raise QoptError.from_rpc(error) from None
            continue
        if status.complete:
            if on_progress:
                on_progress(size, size)
            return sha256
        # A partial upload longer than the file cannot be ours to resume; start over.
        offset = status.committed_offset if 0 <= status.committed_offset <= size else 0
        if on_progress:
            on_progress(offset, size)
        chunks = _Chunks(path, sha256, size, offset, on_progress)
        try:
            response = stub.Upload(iter(chunks), metadata=metadata)
        except grpc.RpcError as error:
            if chunks.error is not None:
                raise QoptError("INVALID_ARGUMENT",
                                f"error reading {path}: {chunks.error}") from None
            if last or error.code() not in _RETRYABLE:
                raise QoptError.from_rpc(error) from None
            continue
        if response.sha256 != sha256:
            raise QoptError("DATA_LOSS",
                            f"server stored {response.sha256} for {path}, expected {sha256}")
        return sha256
    raise AssertionError("every attempt returns, raises or retries")
