"""Client: one channel to qopt-server and a method per thing a pipeline does with it."""
import hashlib
import logging
import os
import time

import grpc
from google.protobuf import json_format

from . import blobs, recipes
from .errors import QoptError, translate_rpc_errors
from .protos import is_finished, parse_state, service_pb2, service_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
# Reports and job listings can exceed gRPC's 4 MiB default; chunks never do.
_MAX_RECEIVE_BYTES = 64 << 20
_PAGE_SIZE = 100
_log = logging.getLogger("qopt_client")


class Client:
    """A connection to qopt-server.

    server: HOST:PORT (default $QOPT_SERVER, else 127.0.0.1:50051).
    token: bearer token sent as `authorization: Bearer <token>` (default $QOPT_TOKEN).
    tls_ca: PEM file of the certificate to trust; connects over TLS (default
        $QOPT_TLS_CA; unset = plaintext).
    timeout: seconds allowed for each unary call; streams (upload, watch, download)
        have none.

    Every failed call raises QoptError(code, message). Use as a context manager, or
    call close(), to release the channel.
    """

    def __init__(self, server=None, token=None, tls_ca=None, timeout=60.0):
        self.server = server or os.environ.get("QOPT_SERVER") or DEFAULT_SERVER
        token = token if token is not None else os.environ.get("QOPT_TOKEN", "")
        tls_ca = tls_ca if tls_ca is not None else os.environ.get("QOPT_TLS_CA", "")
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES)]
        if tls_ca:
            try:
                with open(tls_ca, "rb") as f:
                    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            except OSError as error:
                raise QoptError("INVALID_ARGUMENT",
                                f"cannot read TLS CA {tls_ca}: {error.strerror}") from None
            self.channel = grpc.secure_channel(self.server, credentials, options)
        else:
            self.channel = grpc.insecure_channel(self.server, options)
        #: Call metadata carrying the token; pass it to raw stubs built on `channel`.
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._blobs = service_pb2_grpc.BlobServiceStub(self.channel)
        self._models = service_pb2_grpc.ModelServiceStub(self.channel)
        self._datasets = service_pb2_grpc.DatasetServiceStub(self.channel)
        self._jobs = service_pb2_grpc.JobServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        with translate_rpc_errors():
            return method(request, metadata=self.metadata, timeout=self.timeout)

    # ---- blobs ----

    def upload(self, path, on_progress=None):
        """Uploads a file as a blob and returns its sha256 (hex).

        Nothing is sent when the server already holds it for this tenant; an upload that
        broke off earlier resumes at the server's committed offset. on_progress(done,
        total) gets byte counts, first the starting offset; gRPC calls it from its own
        thread while chunks are sent.
        """
        return blobs.upload_file(self._blobs, self.metadata, self.timeout, os.fspath(path),
                                 on_progress)

    def usage(self):
        """This tenant's storage: a Usage with used_bytes and quota_bytes (0 = none)."""
        return self._call(self._blobs.GetUsage, service_pb2.GetUsageRequest())

    def _blob(self, label, path_or_sha):
        """sha256 of an existing file (uploaded) or a sha256 given as it is."""
        if path_or_sha is None or path_or_sha == "":
            return ""
        value = os.fspath(path_or_sha)
        if os.path.isfile(value):
            return self.upload(value)
        if blobs.is_sha256(value):
            return value
        raise QoptError("INVALID_ARGUMENT", f"{label}: {value} is neither a file nor a sha256")

    # ---- models and datasets ----

    def create_model(self, name, path_or_sha, description="", replace=False):
        """Records a model (a TorchScript file, uploaded if local) under `name`.

        An existing record of that name is ALREADY_EXISTS unless identical or replace=True.
        Returns the Model.
        """
        model = service_pb2.Model(name=name, sha256=self._blob("model", path_or_sha),
                                  description=description)
        return self._call(self._models.CreateModel,
                          service_pb2.CreateModelRequest(model=model, replace=replace))

    def get_model(self, name):
        return self._call(self._models.GetModel, service_pb2.GetModelRequest(name=name))

    def list_models(self):
        """All of this tenant's models (every page)."""
        return self._pages(self._models.ListModels, service_pb2.ListModelsRequest, "models")

    def delete_model(self, name):
        self._call(self._models.DeleteModel, service_pb2.DeleteModelRequest(name=name))

    def create_dataset(self, name, path_or_sha, labels=None, format="", description="",
                       replace=False):
        """Records a data set under `name`: samples and optional labels (files are
        uploaded, sha256s taken as they are); format as DataRef.format ("" = detect).
        Returns the Dataset."""
        dataset = service_pb2.Dataset(
            name=name, sha256=self._blob("dataset", path_or_sha),
            labels_sha256=self._blob("labels", labels), format=format, description=description)
        return self._call(self._datasets.CreateDataset,
                          service_pb2.CreateDatasetRequest(dataset=dataset, replace=replace))

    def get_dataset(self, name):
        return self._call(self._datasets.GetDataset, service_pb2.GetDatasetRequest(name=name))

    def list_datasets(self):
        """All of this tenant's data sets (every page)."""
        return self._pages(self._datasets.ListDatasets, service_pb2.ListDatasetsRequest, "datasets")

    def delete_dataset(self, name):
        self._call(self._datasets.DeleteDataset, service_pb2.DeleteDatasetRequest(name=name))

    def _pages(self, method, request_type, field, **request_fields):
        items, token = [], ""
        while True:
            response = self._call(method, request_type(page_size=_PAGE_SIZE, page_token=token,
                                                       **request_fields))
            items.extend(getattr(response, field))
            token = response.next_page_token
            if not token:
                return items

    # ---- jobs ----

    def submit(self, recipe, priority=0, request_id=None, base_dir=None):
        """Submits a job and returns it (a Job, QUEUED).

        recipe: a dict in the JSON mapping of qopt.v1.Recipe, a Recipe, or the path of a
            JSON / YAML recipe file. Local files it names (model, data, labels, quantsim
            config, frozen encodings) are uploaded and replaced by their sha256; empty
            fields, sha256s and model.name / *_data.name are sent as they are.
        base_dir: folder that relative paths are taken from (default: the recipe file's
            folder, else the working directory).
        request_id: idempotency key; resubmitting it returns the first job.
        """
        if isinstance(recipe, (str, os.PathLike)):
            path = os.fspath(recipe)
            message = recipes.load_recipe_file(path)
            base_dir = base_dir or os.path.dirname(os.path.abspath(path))
        else:
            message = recipes.to_recipe(recipe)
        recipes.replace_local_files(message, base_dir or os.getcwd(), self.upload)
        return self._call(self._jobs.SubmitJob, service_pb2.SubmitJobRequest(
            recipe=message, priority=priority, request_id=request_id or ""))

    def get(self, job_id):
        """The Job: state, stage, progress, error, artifacts."""
        return self._call(self._jobs.GetJob, service_pb2.GetJobRequest(id=job_id))

    def list_jobs(self, state=None, name=None):
        """All jobs (every page), newest first.

        state: a JobState or its name, or a list of them (jobs in any); None = all. The
            server filters by state.
        name: only jobs whose recipe name contains this, ignoring case (filtered here: the
            server keeps names inside recipes).
        Each Job carries technique, created_unix_ms, started_unix_ms, updated_unix_ms (for
        a finished job, when it ended), error and, once it SUCCEEDED, the report's metrics
        (fp32_top1, top1, ... as fractions).
        """
        wanted = state if isinstance(state, (list, tuple, set, frozenset)) else [state]
        try:
            states = [parse_state(s) for s in wanted if s is not None]
        except ValueError:
            raise QoptError("INVALID_ARGUMENT", f"no job state in {state!r}") from None
        jobs = self._pages(self._jobs.ListJobs, service_pb2.ListJobsRequest, "jobs", states=states)
        if name:
            jobs = [job for job in jobs if name.lower() in job.recipe.name.lower()]
        return jobs

    def cancel(self, job_id):
        """Cancels a queued or running job; returns the Job."""
        return self._call(self._jobs.CancelJob, service_pb2.CancelJobRequest(id=job_id))

    def delete_job(self, job_id):
        """Deletes a finished job with its events, report and artifacts."""
        self._call(self._jobs.DeleteJob, service_pb2.DeleteJobRequest(id=job_id))

    def report(self, job_id):
        """The job's report (a qopt.v1.Report) as a dict, keyed as in report.json: recipe,
        model, device, peak_memory_mib (where measured), steps (each with step, index,
        seconds, figures, layers, series, artifacts and maybe details), metrics (the last
        evaluation's: fp32_top1, top1, fp32_top5, top5, output_sqnr_db, top1_agreement,
        mean_kl, eval_samples, float_seconds, simulated_seconds) and cost (input_shape,
        macs, parameters, parameter_bytes, activation_bytes, layers).
        report_message() gives the message itself."""
        return json_format.MessageToDict(self.report_message(job_id), preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    def report_message(self, job_id):
        """The job's report as a qopt.v1.Report message."""
        return self._call(self._jobs.GetReport, service_pb2.GetReportRequest(id=job_id))

    def watch(self, job_id, after=0):
        """Yields the job's JobEvents after sequence `after`, as they happen, and ends after
        the final one (SUCCEEDED, FAILED or CANCELLED).

        Raises QoptError when the stream breaks; watch again with the last event's
        sequence to resume. wait() does that for you.
        """
        call = self._jobs.WatchJob(service_pb2.WatchJobRequest(id=job_id, after_sequence=after),
                                   metadata=self.metadata)
        try:
            with translate_rpc_errors():
                for event in call:
                    # Events are replayed from `after`; one sent twice is not news.
                    if event.sequence <= after:
                        continue
                    after = event.sequence
                    yield event
                    if is_finished(event.state):
                        return
        finally:
            call.cancel()

    def rows(self, job_id, after=0):
        """Yields (stage, qopt.v1.LayerRow) for each report row a running step streams as
        soon as it is measured (analyze, mixed_precision: one per quantizer group), from the
        job's events after sequence `after` until the job finishes."""
        for event in self.watch(job_id, after):
            if event.HasField("layer_row"):
                yield event.stage, event.layer_row

    def wait(self, job_id, on_event=None, reconnects=4):
        """Follows the job until it finishes and returns the final Job.

        on_event(event) is called with each JobEvent. A stream broken by UNAVAILABLE is
        reopened after the last event seen, up to `reconnects` times in a row with 1, 2,
        4, 8 s backoff.
        """
        after, failures, ever_received = 0, 0, False
        while True:
            received, error = False, None
            try:
                for event in self.watch(job_id, after):
                    received = ever_received = True
                    after = event.sequence
                    if on_event:
                        on_event(event)
                    if is_finished(event.state):
                        return self.get(job_id)
            except QoptError as e:
                # Every job has its QUEUED event, so a stream that broke before any event
                # means no server at all: say so now rather than after the backoff.
                if e.code != "UNAVAILABLE" or not ever_received:
                    raise
                error = e
            else:
                job = self.get(job_id)
                if is_finished(job.state):
                    return job
            failures = 1 if received else failures + 1
            if failures > reconnects:
                raise error or QoptError("UNAVAILABLE", "the server keeps closing the event stream")
            delay = 2 ** (failures - 1)
            _log.warning("%s: %s, reconnecting in %d s", job_id,
                         error.message if error else "event stream ended", delay)
            time.sleep(delay)

    def download(self, job_id, name, dest_path):
        """Downloads artifact `name` of a job to dest_path and returns the file's path.
        A dest_path that is a folder or ends with "/" gets the file `name` inside it.

        The bytes go to dest_path + ".partial", renamed only when size and sha256 match
        the job's artifact entry (else QoptError DATA_LOSS and no file). A name that is
        not a plain file name (a path separator, a leading ".") is INVALID_ARGUMENT: an
        artifact name never picks where its file goes.
        """
        _check_plain_file_name(name)
        job = self.get(job_id)
        artifact = next((a for a in job.artifacts if a.name == name), None)
        if artifact is None:
            raise QoptError("NOT_FOUND", f"job {job_id} has no artifact {name}")
        dest = os.fspath(dest_path)
        if os.path.isdir(dest) or dest.endswith(os.sep):
            os.makedirs(dest, exist_ok=True)
            dest = os.path.join(dest, name)
        return self._fetch(job_id, artifact, dest)

    def download_all(self, job_id, dest_dir):
        """Downloads every artifact of a finished job into folder dest_dir (made if
        missing), each as download() does: verified, and under its own name only once
        complete. Returns the files' paths in the job's order of artifacts.

        FAILED_PRECONDITION while the job is queued or running (its artifacts are not all
        there yet) and for a job without artifacts. On an error the files downloaded
        before it stay, complete.
        """
        job = self.get(job_id)
        if not is_finished(job.state):
            raise QoptError("FAILED_PRECONDITION", (
                f"job {job_id} is {service_pb2.JobState.Name(job.state)}; "
                "its artifacts are complete once it has finished"))
        if not job.artifacts:
            why = f": {job.error.splitlines()[0]}" if job.error else ""
            raise QoptError("FAILED_PRECONDITION", (
                f"job {job_id} ({service_pb2.JobState.Name(job.state)}) has no artifacts{why}"))
        dest = os.fspath(dest_dir)
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as error:
            raise QoptError("INVALID_ARGUMENT",
                            f"cannot make folder {dest}: {error.strerror}") from None
        return [self._fetch(job_id, artifact, os.path.join(dest, artifact.name))
                for artifact in job.artifacts]

    def _fetch(self, job_id, artifact, dest):
        """Streams `artifact` to dest via dest + ".partial", renamed once size and sha256
        match and it is on disk (fsync); returns dest."""
        _check_plain_file_name(artifact.name)
        name = artifact.name
        partial = dest + ".partial"
        digest, size = hashlib.sha256(), 0
        try:
            with open(partial, "wb") as out, translate_rpc_errors():
                request = service_pb2.DownloadArtifactRequest(job_id=job_id, name=name)
                for chunk in self._jobs.DownloadArtifact(request, metadata=self.metadata):
                    out.write(chunk.data)
                    digest.update(chunk.data)
                    size += len(chunk.data)
                out.flush()
                os.fsync(out.fileno())  # on disk before it takes the final name
            if size != artifact.size or digest.hexdigest() != artifact.sha256:
                raise QoptError("DATA_LOSS", (
                    f"{name}: received {size} bytes with sha256 {digest.hexdigest()}, "
                    f"expected {artifact.size} bytes with sha256 {artifact.sha256}"))
            os.replace(partial, dest)
            _fsync_directory(os.path.dirname(os.path.abspath(dest)))
        except OSError as error:
            _remove_quietly(partial)
            raise QoptError("INVALID_ARGUMENT",
                            f"cannot write {error.filename}: {error.strerror}") from None
        except BaseException:
            _remove_quietly(partial)
            raise
        return dest


def _check_plain_file_name(name):
    """The server's rule for artifact names (common/file_name.h), checked again here."""
    why = None
    if not name:
        why = "it is empty"
    elif len(name.encode("utf-8", "surrogateescape")) > 255:
        why = "it is longer than 255 bytes"
    elif name.startswith("."):
        why = "it starts with '.'"
    elif "/" in name or "\\" in name:
        why = "it contains a path separator"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        why = "it contains a control character"
    if why:
        raise QoptError("INVALID_ARGUMENT", f"artifact {name!r} is not a plain file name: {why}")


def _fsync_directory(path):
    """Makes a rename in `path` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
