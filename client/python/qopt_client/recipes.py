"""Recipes as messages: from dicts (protobuf's JSON mapping, unknown fields are errors) or
JSON / YAML files, and the local input files they name."""
import json
import os

from google.protobuf import json_format

from .blobs import is_sha256
from .errors import QoptError
from .protos import recipe_pb2


def file_fields(message, prefix=""):
    """(label, message, field name) of every non-empty field marked [(qopt.v1.file) = true]
    in recipe.proto, in sub-messages that are set (ListFields skips the others, so walking
    never adds one)."""
    for field, value in message.ListFields():
        label = f"{prefix}{field.name}"
        if field.type == field.TYPE_MESSAGE:
            if field.label == field.LABEL_REPEATED:
                for i, item in enumerate(value):
                    yield from file_fields(item, f"{label}[{i}].")
            else:
                yield from file_fields(value, f"{label}.")
        elif field.GetOptions().Extensions[recipe_pb2.file]:
            yield label, message, field.name


def to_recipe(recipe):
    """A new Recipe message from a dict (JSON mapping, field names as in recipe.proto) or
    a copy of a Recipe. Unknown fields and wrong types raise QoptError INVALID_ARGUMENT."""
    if isinstance(recipe, recipe_pb2.Recipe):
        copy = recipe_pb2.Recipe()
        copy.CopyFrom(recipe)
        return copy
    if isinstance(recipe, dict):
        try:
            return json_format.ParseDict(recipe, recipe_pb2.Recipe(), ignore_unknown_fields=False)
        except json_format.ParseError as error:
            raise QoptError("INVALID_ARGUMENT", f"invalid recipe: {error}") from None
    raise TypeError(f"a recipe is a dict or a qopt.v1.Recipe, not {type(recipe).__name__}")


def load_recipe_file(path):
    """The recipe in a JSON file (or YAML, when PyYAML is installed) as a Recipe."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise QoptError("INVALID_ARGUMENT",
                        f"cannot read recipe {path}: {error.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        data = _parse_yaml(path, text)
    else:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise QoptError("INVALID_ARGUMENT", f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise QoptError("INVALID_ARGUMENT", f"{path}: a recipe is a JSON object")
    try:
        return to_recipe(data)
    except QoptError as error:
        raise QoptError(error.code, f"{path}: {error.message}") from None


def _parse_yaml(path, text):
    try:
        import yaml  # Debian: python3-yaml; only YAML recipes need it
    except ImportError:
        raise QoptError("INVALID_ARGUMENT",
                        f"{path}: YAML recipes need PyYAML (python3-yaml)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise QoptError("INVALID_ARGUMENT", f"{path}: {error}") from None


def local_file(label, value, base_dir):
    """The local file a recipe field names, or None when the field is empty or already a
    sha256. A bare sha256 is taken as a file only when a file of that name exists."""
    if not value:
        return None
    path = value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
    if is_sha256(value) and not os.path.exists(path):
        return None
    if os.path.isdir(path):
        raise QoptError("INVALID_ARGUMENT", f"{label}: {path} is a folder; the service takes "
                                            "single files (pack it into an .npz)")
    if not os.path.isfile(path):
        raise QoptError("INVALID_ARGUMENT", f"{label}: no such file: {path}")
    return path


def replace_local_files(recipe, base_dir, upload):
    """Uploads every local file `recipe` names (upload(path) -> sha256) and puts the
    sha256 in its place; each file is uploaded once however many fields name it."""
    uploaded = {}
    for label, message, field in list(file_fields(recipe)):
        path = local_file(label, getattr(message, field), base_dir)
        if path is None:
            continue
        if path not in uploaded:
            uploaded[path] = upload(path)
        setattr(message, field, uploaded[path])
