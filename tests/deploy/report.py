"""How the deploy checks read files and say what they found."""
import copy
import os

import yaml


class Report:
    """Prints "ok" / "FAIL <file>: <problem>" lines and counts them."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok   {what}")

    def fail(self, path, problem):
        self.failed += 1
        print(f"FAIL {path}: {problem}")

    def note(self, what):
        print(f"note {what}")

    def check(self, condition, path, problem, what):
        if condition:
            self.ok(what)
        else:
            self.fail(path, problem)
        return condition


class Sources:
    """The deployment files, parsed, each object remembering the file it came from."""

    def __init__(self, root, report):
        self.root = root
        self.report = report
        self.cache = {}

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def load_yaml(self, path):
        """The file's documents (fresh copies), or None when it does not parse."""
        if path not in self.cache:
            self.cache[path] = self._parse(path)
        return copy.deepcopy(self.cache[path])

    def _parse(self, path):
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            self.report.fail(self.rel(path), f"does not parse as YAML: {e}")
            return None
        self.report.ok(f"{self.rel(path)} parses")
        return docs
